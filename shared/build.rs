//! Rebuilds the crate when a migration changes (refinery embeds them).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
