//! Link flags of the `skiff` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if gnu_linux {
        // The binary is position-independent (ASLR), so the loader relocates about 100k
        // pointers in its static data at every start. Packed as DT_RELR they take 36 KB
        // instead of 2.4 MB of `.rela.dyn` that every process (each runtime verb, twice per
        // `run`; the agent; the master) read and kept resident. GNU ld >= 2.38 and glibc >=
        // 2.36 do it; ld leaves it out when the C library cannot load it, and older ld
        // ignores the option with a warning.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
