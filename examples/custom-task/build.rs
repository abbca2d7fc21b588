//! Gives the binary an rpath to libtorch, as `hopper-worker`'s own build does:
//! the hopper-worker library links it (for its embedding engine), and
//! torch-sys sets no search path for downstream binaries. The path comes from
//! `LIBTORCH_LIB` or `LIBTORCH` (set by `scripts/env.sh`).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    if let Some(root) = std::env::var_os("LIBTORCH_LIB").or_else(|| std::env::var_os("LIBTORCH")) {
        let lib = std::path::PathBuf::from(root).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
