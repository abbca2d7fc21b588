//! `hopper-extract`: extracts and chunks one document in a process of its
//! own, for `hopper-worker`, which starts it per document under hard limits
//! (see the `hopper_extract` library). Not meant to be run by hand; it
//! answers `--version` so an installation can be checked.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("hopper-extract {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    std::process::exit(hopper_extract::child::run());
}
