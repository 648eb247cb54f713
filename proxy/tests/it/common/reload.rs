//! Writing a running edge's config the ways operators do, and watching it reload.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{client, EdgeProc};

/// The admin token the reload tests configure.
pub const TOKEN: &str = "reload-token-0123456789";

/// How a test writes the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStyle {
    /// Open, truncate, write in two parts (as `vi` with `backupcopy=yes` or `echo >` do).
    InPlace,
    /// Write a temporary file beside it, then rename it over (as most editors and
    /// configuration tools do).
    Rename,
    /// Kubernetes' atomic writer: a new `..<generation>` directory, then `..data` swapped to it.
    ConfigMap,
}

/// Writes `text` to `path` (which, for [`WriteStyle::ConfigMap`], is `DIR/config.toml`).
pub fn write_config(path: &Path, text: &str, style: WriteStyle) {
    match style {
        WriteStyle::InPlace => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .unwrap();
            let (a, b) = text.split_at(text.len() / 2);
            f.write_all(a.as_bytes()).unwrap();
            f.flush().unwrap();
            f.write_all(b.as_bytes()).unwrap();
            f.sync_all().unwrap();
        }
        WriteStyle::Rename => {
            let tmp = path.with_file_name(".edge.toml.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        WriteStyle::ConfigMap => configmap_write(path.parent().unwrap(), text),
    }
}

/// One ConfigMap update in `dir`: `..<gen>/config.toml`, then `..data -> ..<gen>` by rename,
/// then the previous generation removed.
pub fn configmap_write(dir: &Path, text: &str) {
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    let generation = format!(
        "..2026_11_22_00_00_00.{:09}",
        GENERATION.fetch_add(1, Ordering::SeqCst)
    );
    let gen_dir = dir.join(&generation);
    std::fs::create_dir(&gen_dir).unwrap();
    std::fs::write(gen_dir.join("config.toml"), text).unwrap();
    let data = dir.join("..data");
    let previous = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&generation, &tmp).unwrap();
    std::fs::rename(&tmp, &data).unwrap();
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

impl EdgeProc {
    /// Writes `[listen]` (as started) plus `body` as the new config, in `style`.
    pub fn rewrite(&self, body: &str, style: WriteStyle) {
        write_config(
            &self.config,
            &format!("{}{body}", self.listen_lines()),
            style,
        );
    }

    /// `dime_config_reloads_total{result}` now.
    pub async fn reloads(&self, result: &str) -> u64 {
        self.metric(&format!("dime_config_reloads_total{{result=\"{result}\"}}"))
            .await
            .unwrap_or(0.0) as u64
    }

    /// Waits until `dime_config_reloads_total{result}` reaches `n` (at most 5 s) and returns
    /// the count then.
    pub async fn wait_reloads(&self, result: &str, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.reloads(result).await;
            if now >= n || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The `hash` label of `dime_config_info`.
    pub async fn config_hash(&self) -> String {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("dime_config_info{hash=\""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    }

    /// `POST /config/reload` with `token`: status and body.
    pub async fn admin_reload(&self, token: Option<&str>) -> (u16, String) {
        let mut req = client().post(self.admin_url("/config/reload"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -HUP failed");
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.logs().lines().filter(|l| l.contains(needle)).count()
    }
}
