//! `NATTER_ALLOWED_ORIGIN` is comma-separated: the binary splits it into
//! one origin per entry (checked through the start-up error, which names
//! only the bad entry) and skips empty ones.

use std::process::Command;

#[test]
fn the_env_var_is_split_on_commas() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-server"))
        .args(["--listen", "127.0.0.1:0"])
        .env("NATTER_ALLOWED_ORIGIN", "https://a.example,, null,bad/")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run natter-server");
    assert!(!out.status.success(), "a bad listed origin was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allowed-origin \"bad/\" is not an origin"),
        "{stderr}"
    );
}
