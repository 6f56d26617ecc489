//! Link flags of the `skiff` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={CODE_ORDER}");
    println!("cargo:rerun-if-env-changed=SKIFF_CODE_ORDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_crt = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if gnu_linux && !static_crt {
        // A dynamic build (`RUSTFLAGS= cargo build` overrides .cargo/config.toml's static
        // one): a PIE whose relative relocations are packed as DT_RELR, 36 KB instead of
        // 2.4 MB of `.rela.dyn` that every process reads and keeps resident. GNU ld >= 2.38
        // and glibc >= 2.36 do it; ld leaves it out when the C library cannot load it, and
        // older ld ignores the option with a warning. The static build has nothing to
        // relocate: .cargo/config.toml links it position-dependent.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The runtime verbs' functions first in `.text`, next to each other (scripts/
    // order-runtime-code.sh writes the list). Only where the link goes through rustc's own
    // lld: x86_64 gnu/linux from Rust 1.90 on, with no linker chosen by the build's
    // configuration. GNU ld has no such option. SKIFF_CODE_ORDER=0 leaves it out.
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(CODE_ORDER);
    if gnu_linux
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("SKIFF_CODE_ORDER") != "0"
        && links_with_rust_lld(
            &var("RUSTC"),
            &var("RUSTC_LINKER"),
            &var("CARGO_ENCODED_RUSTFLAGS"),
        )
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

/// Whether rustc links with its own lld: its default for x86_64-unknown-linux-gnu since
/// 1.90, unless a linker is configured (`RUSTC_LINKER`) or the flags choose one.
fn links_with_rust_lld(rustc: &str, linker: &str, encoded_flags: &str) -> bool {
    if !linker.is_empty() {
        return false;
    }
    // `linker` also matches -C linker-flavor and -C linker-features
    let chooses_linker = encoded_flags.split('\x1f').any(|f| {
        ["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|k| f.contains(k))
    });
    if chooses_linker {
        return false;
    }
    let Ok(out) = std::process::Command::new(if rustc.is_empty() { "rustc" } else { rustc })
        .arg("-vV")
        .output()
    else {
        return false;
    };
    // "release: 1.95.0"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or_default();
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

/// The function list, relative to the package.
const CODE_ORDER: &str = "runtime-code.order";
