//! Gives the worker binary an rpath to the libtorch it was linked against,
//! so it runs without LD_LIBRARY_PATH. torch-sys sets none for downstream
//! binaries. The lib dir comes from `LIBTORCH_LIB` (as set by
//! `scripts/env.sh`) or `LIBTORCH`.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(root) = std::env::var_os("LIBTORCH_LIB").or_else(|| std::env::var_os("LIBTORCH")) {
        let lib = std::path::Path::new(&root).join("lib");
        // Every linked target of this package (binary and unit tests).
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
