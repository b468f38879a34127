//! Installs the official phoenix client from npm (not committed) and hands
//! its ES module to the binary, which serves it to the page.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest.join("web");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    let module = web.join("node_modules/phoenix/priv/static/phoenix.mjs");
    if !module.exists() {
        let status =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&web).status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!(
                "`npm ci` in {} failed ({other:?}): Node.js and npm are needed to build the chat page",
                web.display()
            ),
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("phoenix.mjs");
    if let Err(e) = std::fs::copy(&module, &out) {
        panic!("copying {}: {e}", module.display());
    }
}
