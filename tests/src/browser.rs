//! The demo page in a real browser: Debian's headless Chromium driven by Playwright
//! (`tests/browser/demo_driver.mjs`, JSON lines over stdin/stdout). The driver exits,
//! closing the browser, when this is dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::py::LineProc;
use crate::workspace_root;

/// How long the page may take to load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// One open page.
pub struct DemoPage {
    proc: LineProc,
}

impl DemoPage {
    /// Opens `url` in a fresh headless Chromium.
    pub fn open(url: &str) -> DemoPage {
        let dir = workspace_root().join("tests").join("browser");
        assert!(
            dir.join("node_modules").join("playwright-core").exists(),
            "playwright-core is missing: run scripts/setup.sh (npm ci in tests/browser)"
        );
        let mut command = Command::new("node");
        command
            .arg(dir.join("demo_driver.mjs"))
            .arg("--url")
            .arg(url)
            .current_dir(&dir);
        let mut proc = LineProc::spawn(command, "demo_driver.mjs");
        // Closing stdin closes Chromium and removes its profile directory.
        proc.grace = Duration::from_secs(5);
        proc.expect_kind("ready", LOAD_TIMEOUT);
        DemoPage { proc }
    }

    fn ask(&mut self, command: Value, kind: &str, timeout: Duration) -> Value {
        self.proc.send_line(&command.to_string());
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.proc.next(left) {
                Some(v) if v["kind"] == kind => return v,
                Some(v) if v["kind"] == "error" => panic!("the browser driver failed: {v}"),
                Some(v) => eprintln!("browser: {v}"),
                None => panic!("no {kind:?} from the browser driver within {timeout:?}"),
            }
        }
    }

    /// The page's `window.demo`.
    pub fn state(&mut self) -> Value {
        self.ask(json!({"cmd": "state"}), "state", Duration::from_secs(10))
    }

    /// Waits until `window.demo` satisfies `check`; returns it.
    pub fn wait_state(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state();
            if check(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {what}: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a full-page screenshot.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(path));
        self.ask(
            json!({"cmd": "screenshot", "path": path}),
            "screenshot",
            Duration::from_secs(20),
        );
    }

    /// Switches to the fleet (herald) view; returns its table.
    pub fn herald_view(&mut self) -> Value {
        self.ask(json!({"cmd": "herald"}), "herald", Duration::from_secs(20))
    }

    /// Back to the ticker board.
    pub fn ticker_view(&mut self) {
        self.ask(json!({"cmd": "ticker"}), "ticker", Duration::from_secs(10));
    }
}
