//! Builds the plugins to wasm32-wasip2: the first-party email and SMS plugins,
//! which the daemon embeds, and the WeCom plugin and the hostile and takeover
//! test plugins, which the tests install. `cargo build` / `cargo test` on a fresh clone need nothing else.
//!
//! The nested cargo gets its own target dir: sharing the outer build's would
//! deadlock on its lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// A 256 KiB stack instead of Rust's 1 MiB: the sandbox resets the low end of a
/// plugin's memory (where the stack is) after every call, so a smaller stack is
/// less to reset. minijinja's own nesting limits stop a template well before it.
const STACK_SIZE_ARG: &str = "link-arg=-zstack-size=262144";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in [
        "plugins/email/src",
        "plugins/email/Cargo.toml",
        "plugins/sms/src",
        "plugins/sms/Cargo.toml",
        "plugins/wecom/src",
        "plugins/wecom/Cargo.toml",
        "tests/hostile-plugin/src",
        "tests/hostile-plugin/Cargo.toml",
        "tests/takeover-plugin/src",
        "tests/takeover-plugin/Cargo.toml",
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_target();
    let target_dir = root.join("target").join("plugin-build");
    // Embedded in the daemon (email, sms), installed by tests (wecom, the test plugins).
    for (package, env) in [
        ("nudge-email-plugin", "NUDGE_EMAIL_PLUGIN_WASM"),
        ("nudge-sms-plugin", "NUDGE_SMS_PLUGIN_WASM"),
        ("nudge-wecom-plugin", "NUDGE_WECOM_PLUGIN_WASM"),
        ("nudge-hostile-plugin", "NUDGE_HOSTILE_PLUGIN_WASM"),
        ("nudge-takeover-plugin", "NUDGE_TAKEOVER_PLUGIN_WASM"),
    ] {
        let wasm = build_plugin(&root, &target_dir, package);
        println!("cargo:rustc-env={env}={}", wasm.display());
    }
}

/// Builds one plugin crate as a wasm component and returns the file.
fn build_plugin(root: &Path, target_dir: &Path, package: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(root)
        // A cdylib only for wasm: natively a plugin is a plain rlib that unit-tests
        // like any crate (wit-bindgen's export names do not link as a native cdylib).
        .args([
            "rustc",
            "--profile",
            "plugin",
            "-p",
            package,
            "--lib",
            "--target",
            TARGET,
            "--crate-type",
            "cdylib",
            "--",
            "-C",
            STACK_SIZE_ARG,
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    // What the outer cargo sets for compiling the daemon must not leak into the plugin's build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("run cargo to build a plugin");
    if !status.success() {
        panic!("building {package} for {TARGET} failed (see the output above)");
    }
    target_dir
        .join(TARGET)
        .join("plugin")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// Installs the wasm target through rustup when it is missing, once, loudly.
fn ensure_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == TARGET) => {}
        Ok(_) => {
            println!("cargo:warning=installing the {TARGET} target with rustup (needed for the email plugin)");
            let ok = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                panic!(
                    "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it and build again"
                );
            }
        }
        Err(_) => {
            println!("cargo:warning=rustup not found; assuming the {TARGET} target is installed")
        }
    }
}
