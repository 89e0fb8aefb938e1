//! A real OBS Studio for the one-click setup tests: headless under Xvfb with software OpenGL, a
//! throwaway HOME, the WebSocket server on its own port with a password, and a scene that loops a
//! small generated clip (640×360, 30 fps). Installed with apt-get when missing (`obs-studio xvfb
//! xauth`); stopped with SIGTERM (the only way: obs-websocket 5.1 has no quit request).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use onair_obs::{ObsClient, ObsUrl};

/// OBS tests run one at a time (CPU, and one Xvfb each): hold this while an OBS runs.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The canvas every test OBS renders (kept small: x264 veryfast at 640×360@30 ≈ 60 % of a core).
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;
pub const FPS: u32 = 30;

/// Installs OBS, Xvfb and xauth with apt-get when any is missing (once per test binary).
pub fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let have = |tool: &str| {
            std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        };
        if ["obs", "xvfb-run", "Xvfb", "xauth"].iter().all(|t| have(t)) {
            return;
        }
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let apt = |args: &[&str]| {
            let mut cmd = if root { Command::new("apt-get") } else { Command::new("sudo") };
            if !root {
                cmd.args(["-n", "apt-get"]);
            }
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success())
        };
        let install = ["install", "-y", "-qq", "--no-install-recommends", "obs-studio", "xvfb", "xauth"];
        let installed = apt(&install) || (apt(&["update", "-qq"]) && apt(&install));
        if !installed {
            panic!(
                "OBS is not installed and `apt-get install obs-studio xvfb xauth` failed: run it as root \
                 (or scripts/setup.sh --test)"
            );
        }
    });
}

/// A small clip for the scene: 10 s of moving test pattern and a tone, generated once and kept in
/// the temp dir for later runs.
fn clip() -> PathBuf {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("onair-obs-clip-{WIDTH}x{HEIGHT}-{FPS}.mp4"));
        if path.is_file() {
            return path;
        }
        let partial = path.with_extension(format!("{}.mp4", std::process::id()));
        let ok = Command::new(crate::require_tool("ffmpeg"))
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", &format!("testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}")])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "600k", "-pix_fmt", "yuv420p"])
            .args(["-c:a", "aac", "-b:a", "96k"])
            .arg(&partial)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg could not generate the OBS test clip");
        std::fs::rename(&partial, &path).unwrap();
        path
    })
    .clone()
}

/// A throwaway HOME with OBS' settings: global.ini (no first-run wizard, WebSocket on with a
/// password), a profile `Test` (Simple output mode, OBS' defaults, 640×360@30) and a scene
/// collection `Test` playing the clip. Tests may add profiles before [`Obs::launch`].
pub struct ObsHome {
    pub home: PathBuf,
    pub port: u16,
    pub password: String,
}

impl ObsHome {
    pub fn new() -> ObsHome {
        ensure_installed();
        let home =
            std::env::temp_dir().join(format!("onair-obs-home-{}-{}", std::process::id(), rand::random::<u32>()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let password = format!("pw-{:08x}", rand::random::<u32>());
        let h = ObsHome { home, port, password };
        let config = h.config_dir();
        std::fs::create_dir_all(config.join("basic/scenes")).unwrap();
        std::fs::write(
            config.join("global.ini"),
            format!(
                "[General]\nFirstRun=true\nLastVersion=486539266\nConfirmOnExit=false\n\
                 WarnBeforeStartingStream=false\nWarnBeforeStoppingStream=false\n\n\
                 [OBSWebSocket]\nServerEnabled=true\nServerPort={port}\nAuthRequired=true\nServerPassword={pw}\n\n\
                 [Basic]\nProfile=Test\nProfileDir=Test\nSceneCollection=Test\nSceneCollectionFile=Test\n",
                port = h.port,
                pw = h.password
            ),
        )
        .unwrap();
        let test_profile = config.join("basic/profiles/Test");
        std::fs::create_dir_all(&test_profile).unwrap();
        std::fs::write(
            test_profile.join("basic.ini"),
            format!(
                "[General]\nName=Test\n\n[Video]\nBaseCX={WIDTH}\nBaseCY={HEIGHT}\nOutputCX={WIDTH}\n\
                 OutputCY={HEIGHT}\nFPSType=1\nFPSInt={FPS}\n"
            ),
        )
        .unwrap();
        let scene = serde_json::json!({
            "name": "Test",
            "current_scene": "Scene",
            "current_program_scene": "Scene",
            "scene_order": [{ "name": "Scene" }],
            "sources": [
                {
                    "id": "scene", "versioned_id": "scene", "name": "Scene", "enabled": true,
                    "settings": { "id_counter": 1, "custom_size": false, "items": [{
                        "name": "Clip", "id": 1, "visible": true, "locked": false,
                        "pos": { "x": 0.0, "y": 0.0 }, "scale": { "x": 1.0, "y": 1.0 }, "rot": 0.0,
                        "align": 5, "bounds_type": 0, "bounds_align": 0, "bounds": { "x": 0.0, "y": 0.0 },
                        "crop_left": 0, "crop_top": 0, "crop_right": 0, "crop_bottom": 0
                    }] }
                },
                {
                    "id": "ffmpeg_source", "versioned_id": "ffmpeg_source", "name": "Clip", "enabled": true,
                    "settings": {
                        "local_file": clip(), "is_local_file": true, "looping": true, "restart_on_activate": false
                    }
                }
            ]
        });
        std::fs::write(config.join("basic/scenes/Test.json"), serde_json::to_vec_pretty(&scene).unwrap()).unwrap();
        h
    }

    /// OBS' settings folder inside this HOME (`$XDG_CONFIG_HOME/obs-studio`).
    pub fn config_dir(&self) -> PathBuf {
        self.home.join(".config/obs-studio")
    }
}

impl Default for ObsHome {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ObsHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A running OBS; SIGTERM (then SIGKILL) to its whole process group when dropped.
pub struct Obs {
    home: Option<ObsHome>,
    child: Child,
    log: PathBuf,
}

impl Obs {
    /// Starts OBS on `home` with profile `profile` and waits until its WebSocket accepts us.
    pub async fn launch(home: ObsHome, profile: &str) -> Obs {
        let log = home.home.join("obs.log");
        let out = std::fs::File::create(&log).unwrap();
        let display = 200 + rand::random::<u32>() % 700;
        let mut cmd = Command::new(crate::require_tool("xvfb-run"));
        cmd.args(["-a", "-n", &display.to_string(), "-s", "-screen 0 1280x720x24"])
            .args(["obs", "--multi", "--disable-missing-files-check", "--profile", profile, "--collection", "Test"])
            .args(["--websocket_port", &home.port.to_string(), "--websocket_password", &home.password])
            .current_dir(&home.home)
            .env("HOME", &home.home)
            .env("XDG_CONFIG_HOME", home.home.join(".config"))
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("QT_QPA_PLATFORM", "xcb")
            .env("NO_AT_BRIDGE", "1")
            .env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}/no-bus", home.home.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().expect("xvfb-run starts");
        let mut obs = Obs { home: Some(home), child, log };
        let start = Instant::now();
        loop {
            if let Ok(c) = ObsClient::connect(&obs.url(), Some(&obs.home().password)).await {
                drop(c);
                break;
            }
            if let Ok(Some(status)) = obs.child.try_wait() {
                panic!("OBS exited ({status}) before its WebSocket answered:\n{}", obs.log());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("OBS' WebSocket did not answer on port {} within 60 s:\n{}", obs.home().port, obs.log());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tracing::info!(port = obs.home().port, took = ?start.elapsed(), "OBS is up");
        obs
    }

    pub fn home(&self) -> &ObsHome {
        self.home.as_ref().expect("home is kept until stop")
    }

    /// Stops OBS (SIGTERM: it saves its settings) and hands back its HOME to read them.
    pub fn stop(mut self) -> ObsHome {
        self.terminate();
        self.home.take().expect("home is kept until stop")
    }

    pub fn url(&self) -> ObsUrl {
        ObsUrl { host: "127.0.0.1".into(), port: self.home().port }
    }

    pub fn url_string(&self) -> String {
        self.url().to_string()
    }

    /// A new authenticated WebSocket client.
    pub async fn client(&self) -> ObsClient {
        ObsClient::connect(&self.url(), Some(&self.home().password)).await.expect("connect to OBS")
    }

    /// What OBS printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// OBS' settings folder.
    pub fn config_dir(&self) -> PathBuf {
        self.home().config_dir()
    }

    fn signal_group(&self, signal: &str) {
        let _ =
            Command::new("kill").args([signal, "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
    }
}

impl Drop for Obs {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Obs {
    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) && !group_alive(self.child.id()) {
            return;
        }
        self.signal_group("-TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if matches!(self.child.try_wait(), Ok(Some(_))) && !group_alive(self.child.id()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if group_alive(self.child.id()) {
            self.signal_group("-KILL");
        }
        let _ = self.child.wait();
    }
}

/// Whether any process of group `pgid` is still running.
fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
