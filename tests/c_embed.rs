//! The C embedding example (`examples/embed.c`): it builds against the system's GStreamer and
//! runs two streams through the plugin, changing each element's thresholds while playing and
//! checking from the bus that the following frames use them.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn c_application_runs_two_streams_and_retunes_them_while_playing() {
    let Some(dir) = common::plugin_dir() else {
        eprintln!("SKIPPED: no libgstadabm.so beside the test binary");
        return;
    };
    let flags = match Command::new("pkg-config")
        .args(["--cflags", "--libs", "gstreamer-1.0"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        _ => {
            eprintln!("SKIPPED: pkg-config gstreamer-1.0 not found (libgstreamer1.0-dev)");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("embed");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/embed.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-Wall", "-Wextra", "-Werror", "-O2", src, "-o"])
        .arg(&bin)
        .args(flags.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(&bin)
        .arg("40")
        .env("GST_PLUGIN_PATH", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("the C example did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "the C example failed:\n{text}");
    assert!(
        text.contains("40 frames on cpu") && text.ends_with("OK\n"),
        "{text}"
    );
}
