//! A small W3C WebDriver client for the page tests: Debian's chromedriver
//! driving headless Chromium, over plain HTTP and JSON. The tests skip when
//! the browser is not installed, unless `EMPORIUM_TEST_BROWSER=required` (CI).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn installed(candidates: &[&str]) -> Option<String> {
    candidates.iter().find(|p| std::path::Path::new(p).exists()).map(|p| (*p).to_owned())
}

/// A running chromedriver.
pub struct Driver {
    base: String,
    client: reqwest::Client,
    _child: tokio::process::Child,
    browser: String,
}

impl Driver {
    /// Starts chromedriver, or says why it cannot (and the test skips).
    pub async fn start() -> Option<Driver> {
        let required = std::env::var("EMPORIUM_TEST_BROWSER").is_ok_and(|v| v == "required");
        let found = (installed(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]), installed(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]));
        let (Some(driver), Some(browser)) = found else {
            assert!(!required, "EMPORIUM_TEST_BROWSER=required but chromium and chromium-driver are not installed");
            eprintln!("skipping: chromium and chromium-driver are not installed (apt-get install chromium chromium-driver, or run .ci/run)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let driver = Driver { base: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new(), _child: child, browser };
        for _ in 0..100 {
            if let Ok(r) = driver.client.get(format!("{}/status", driver.base)).send().await
                && r.status().is_success()
            {
                return Some(driver);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b.to_string());
        }
        let response = request.send().await.map_err(|e| format!("chromedriver: {e}"))?;
        let text = response.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(error) = v["value"]["error"].as_str() {
            return Err(format!("webdriver {path}: {error}: {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new headless browser window of `width` × `height` CSS pixels.
    pub async fn session(&self, width: u32, height: u32) -> Session<'_> {
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": self.browser, "args": args}}}});
        let v = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        let session = Session { driver: self, id, _profile: profile };
        // Headless windows count the frame differently: set the viewport exactly.
        let outer: Value = session.execute("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];", json!([])).await;
        let (dw, dh) = (outer[0].as_u64().unwrap_or(0), outer[1].as_u64().unwrap_or(0));
        session.post("/window/rect", json!({"width": u64::from(width) + dw, "height": u64::from(height) + dh})).await;
        session
    }
}

/// One browser window.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
    _profile: tempfile::TempDir,
}

impl Session<'_> {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.driver.call(reqwest::Method::POST, &format!("/session/{}{path}", self.id), Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.driver.call(reqwest::Method::GET, &format!("/session/{}{path}", self.id), None).await
    }

    /// Closes the window (and its browser).
    pub async fn quit(self) {
        self.driver.call(reqwest::Method::DELETE, &format!("/session/{}", self.id), None).await;
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// The first element matching `css`, waiting up to 5 s for it.
    pub async fn find(&self, css: &str) -> String {
        for _ in 0..50 {
            let v = self
                .driver
                .client
                .post(format!("{}/session/{}/element", self.driver.base, self.id))
                .header("content-type", "application/json")
                .body(json!({"using": "css selector", "value": css}).to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("chromedriver: {e}"));
            let v: Value = serde_json::from_str(&v.text().await.unwrap_or_default()).unwrap_or(Value::Null);
            if let Some(id) = v["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {css} on {}", self.url().await);
    }

    /// Runs `action` on the element `css`, looking it up again while the
    /// page is still changing under it (a navigation in progress).
    async fn on_element(&self, css: &str, method: reqwest::Method, action: &str, body: Option<Value>) -> Value {
        let mut last = String::new();
        for _ in 0..50 {
            let el = self.find(css).await;
            match self.driver.try_call(method.clone(), &format!("/session/{}/element/{el}{action}", self.id), body.clone()).await {
                Ok(v) => return v,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css}: {last}");
    }

    pub async fn click(&self, css: &str) {
        self.on_element(css, reqwest::Method::POST, "/click", Some(json!({}))).await;
    }

    /// Types `text` into the field `css` (after clearing it); a select (which
    /// cannot be typed into) has the option of that value chosen instead.
    pub async fn fill(&self, css: &str, text: &str) {
        let tag = self.on_element(css, reqwest::Method::GET, "/name", None).await;
        if tag.as_str().is_some_and(|t| t.eq_ignore_ascii_case("select")) {
            return self.choose(css, text).await;
        }
        self.on_element(css, reqwest::Method::POST, "/clear", Some(json!({}))).await;
        self.on_element(css, reqwest::Method::POST, "/value", Some(json!({"text": text}))).await;
    }

    /// Chooses the option whose value is `value` in the select `css`, as a
    /// person picking it would (the page sees `input` and `change`).
    pub async fn choose(&self, css: &str, value: &str) {
        let script = "const s = document.querySelector(arguments[0]); \
            if (!s || !Array.from(s.options).some(o => o.value === arguments[1])) return false; \
            s.value = arguments[1]; s.dispatchEvent(new Event('input', {bubbles: true})); s.dispatchEvent(new Event('change', {bubbles: true})); return true;";
        self.find(css).await;
        let chosen = self.execute(script, json!([css, value])).await;
        assert_eq!(chosen, true, "{css} has no option {value}");
    }

    /// Chooses `path` in the file field `css`.
    pub async fn upload(&self, css: &str, path: &std::path::Path) {
        self.on_element(css, reqwest::Method::POST, "/value", Some(json!({"text": path.display().to_string()}))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, reqwest::Method::GET, "/text", None).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (up to 5 s) until the text of `css` contains `needle`; the text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..50 {
            // Asked of the page as it is; while a page loads the script may fail, or find nothing yet.
            let script = json!({"script": "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", "args": [css]});
            if let Ok(v) = self.driver.try_call(reqwest::Method::POST, &format!("/session/{}/execute/sync", self.id), Some(script)).await {
                text = v.as_str().unwrap_or_default().to_owned();
                if text.contains(needle) {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never said “{needle}”: {text}");
    }

    /// Sends the storefront's sign-in form at `base` as `email` with the
    /// tests' password; where it leads is the caller's to wait for.
    pub async fn send_sign_in(&self, base: &str, email: &str) {
        self.goto(&format!("{base}/account/sign-in")).await;
        self.fill("#email", email).await;
        self.fill("#password", super::PASSWORD).await;
        self.click("form.stack button[type=submit]").await;
    }

    /// Signs in at `base` as `email` through the storefront's form, landing
    /// on `lands` (a customer's account, or the console for staff).
    pub async fn sign_in(&self, base: &str, email: &str, lands: &str) {
        self.send_sign_in(base, email).await;
        self.wait_url(lands).await;
    }

    /// Opens each console page `(name, path)` under `base` and asserts that
    /// none is wider than the window; a screenshot of each, `phone-admin-<name>`.
    pub async fn console_pages_fit(&self, base: &str, pages: &[(&str, String)]) {
        for (name, path) in pages {
            self.goto(&format!("{base}{path}")).await;
            self.wait_text("main h1", "").await;
            let overflow = self.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", json!([])).await;
            self.screenshot(&format!("phone-admin-{name}")).await;
            assert_eq!(overflow, 0, "the console's {name} page is wider than the phone");
        }
    }

    /// Waits (up to 5 s) until the address ends with `suffix`.
    pub async fn wait_url(&self, suffix: &str) {
        for _ in 0..50 {
            if self.url().await.ends_with(suffix) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.get("/source").await;
        panic!("still at {} instead of …{suffix}: {}", self.url().await, page.as_str().unwrap_or_default());
    }

    /// Waits (up to 5 s) until the page's title starts with `prefix`.
    pub async fn wait_title(&self, prefix: &str) {
        for _ in 0..50 {
            if self.title().await.starts_with(prefix) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the title is still {:?}, not {prefix}…", self.title().await);
    }

    pub async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args})).await
    }

    /// Saves a PNG of the window to `target/screenshots/<name>.png` (a test artefact).
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.get("/screenshot").await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).unwrap_or_default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), bytes);
    }

    /// Saves a PNG of the whole page (down to `max_height` CSS pixels, at
    /// the window's width) to `path`, creating its folder; the window alone
    /// when the browser cannot capture beyond it.
    pub async fn page_screenshot(&self, path: &std::path::Path, max_height: u32) {
        use base64::Engine;
        let size = self.execute("return [window.innerWidth, document.documentElement.scrollHeight];", json!([])).await;
        let (width, height) = (size[0].as_u64().unwrap_or(0), size[1].as_u64().unwrap_or(0).min(u64::from(max_height)));
        let params = json!({"cmd": "Page.captureScreenshot", "params": {"format": "png", "captureBeyondViewport": true,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}});
        let png = match self.driver.try_call(reqwest::Method::POST, &format!("/session/{}/goog/cdp/execute", self.id), Some(params)).await {
            Ok(v) if v["data"].is_string() => v["data"].clone(),
            _ => self.get("/screenshot").await,
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).unwrap_or_else(|e| panic!("a screenshot that is not base64: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Runs `script` like [`Session::execute`], or says why it could not
    /// (a page still loading, a script error).
    pub async fn try_execute(&self, script: &str, args: Value) -> Result<Value, String> {
        self.driver.try_call(reqwest::Method::POST, &format!("/session/{}/execute/sync", self.id), Some(json!({"script": script, "args": args}))).await
    }

    /// Waits (up to 5 s) until the address, without its query, ends with
    /// none of `paths`: the page has moved on. The address reached.
    pub async fn wait_away_from(&self, paths: &[&str]) -> String {
        let mut url = String::new();
        for _ in 0..50 {
            url = self.url().await;
            let here = url.split(['?', '#']).next().unwrap_or_default();
            if !paths.iter().any(|p| here.ends_with(p)) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("still at {url}");
    }
}
