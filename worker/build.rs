//! Builds the worker's C++ bridge to libtorch — its oneDNN linear operators
//! (`cpp/onednn_linear.cpp`, see `src/embed/onednn.rs`) and its view of the
//! CPU's instruction sets (`cpp/cpu_features.cpp`, see `src/embed/cpu.rs`) —
//! against the libtorch headers, and gives the worker binary an rpath to the libtorch it was
//! linked against, so it runs without LD_LIBRARY_PATH (torch-sys sets none
//! for downstream binaries). Paths come from `LIBTORCH_INCLUDE` /
//! `LIBTORCH_LIB` (as set by `scripts/env.sh`) or `LIBTORCH`, like torch-sys.
use std::{env, path::PathBuf};

fn main() {
    for var in [
        "LIBTORCH",
        "LIBTORCH_INCLUDE",
        "LIBTORCH_LIB",
        "LIBTORCH_CXX11_ABI",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=cpp/onednn_linear.cpp");
    println!("cargo:rerun-if-changed=cpp/cpu_features.cpp");
    let root = |var: &str| env::var_os(var).or_else(|| env::var_os("LIBTORCH"));
    let include = root("LIBTORCH_INCLUDE")
        .map(|r| PathBuf::from(r).join("include"))
        .expect("set LIBTORCH (or LIBTORCH_INCLUDE and LIBTORCH_LIB): `. scripts/env.sh`");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(&include)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .warnings(false)
        .file("cpp/onednn_linear.cpp")
        .file("cpp/cpu_features.cpp")
        .compile("hopper_onednn");
    if let Some(root) = root("LIBTORCH_LIB") {
        let lib = PathBuf::from(root).join("lib");
        // Every linked target of this package (binary and unit tests).
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
