//! Link flags of the `skiff` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={CODE_ORDER}");
    println!("cargo:rerun-if-env-changed=SKIFF_CODE_ORDER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if gnu_linux {
        // The binary is position-independent (ASLR), so the loader relocates about 100k
        // pointers in its static data at every start. Packed as DT_RELR they take 36 KB
        // instead of 2.4 MB of `.rela.dyn` that every process (each runtime verb, twice per
        // `run`; the agent; the master) read and kept resident. GNU ld >= 2.38 and glibc >=
        // 2.36 do it; ld leaves it out when the C library cannot load it, and older ld
        // ignores the option with a warning.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The runtime verbs' functions first in `.text`, next to each other (scripts/
    // order-runtime-code.sh writes the list). Only where rustc links with its own lld by
    // default (x86_64 gnu/linux): GNU ld has no such option. SKIFF_CODE_ORDER=0 leaves it out
    // (e.g. for a build that chose another linker).
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(CODE_ORDER);
    if gnu_linux
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("SKIFF_CODE_ORDER") != "0"
        && order.exists()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // names of another build (hashes change with the profile and the crate versions)
        // are skipped: a stale list costs memory, not correctness
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The function list, relative to the package.
const CODE_ORDER: &str = "runtime-code.order";
