//! OBS profiles on disk: the three files OnAir writes (`basic.ini`, `service.json`,
//! `streamEncoder.json`), where OBS keeps profiles on each OS, and a reader that parses them back.
//!
//! The written profile uses **Simple** output mode (OBS' default) with the x264 encoder and
//! "Enable Advanced Encoder Settings" on, so the x264 options (`keyint=… bframes=0 scenecut=0`)
//! apply; it also fills the Advanced mode's streaming encoder (`streamEncoder.json`: CBR,
//! `keyint_sec`, no B-frames) so switching the mode keeps WebRTC-friendly settings.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{DEFAULT_AUDIO_BITRATE_KBPS, DEFAULT_PRESET, DEFAULT_VIDEO_BITRATE_KBPS, ObsTarget, x264};

/// The profile OnAir writes unless told otherwise.
pub const DEFAULT_PROFILE_NAME: &str = "OnAir";
/// The Flatpak application id of OBS Studio.
pub const FLATPAK_ID: &str = "com.obsproject.Studio";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot find OBS' settings folder: {0} is not set")]
    NoHome(&'static str),
    #[error("cannot write the OBS profile file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read the OBS profile file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the OBS profile file {path} is not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// The profile around OnAir's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    /// The name shown in OBS' Profile menu.
    pub name: String,
    /// Frames per second (the x264 keyframe interval of Simple mode is counted in frames).
    pub fps: u32,
    /// Base and output canvas size; `None` lets OBS pick (from the screen).
    pub resolution: Option<(u32, u32)>,
}

impl Default for ProfileSpec {
    fn default() -> Self {
        Self { name: DEFAULT_PROFILE_NAME.to_owned(), fps: 30, resolution: None }
    }
}

/// The contents of a profile's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFiles {
    pub basic_ini: String,
    pub service_json: String,
    pub stream_encoder_json: String,
}

pub const BASIC_INI: &str = "basic.ini";
pub const SERVICE_JSON: &str = "service.json";
pub const STREAM_ENCODER_JSON: &str = "streamEncoder.json";

/// The files of a profile that streams to `target`.
pub fn profile_files(target: &ObsTarget, spec: &ProfileSpec) -> ProfileFiles {
    let bitrate = target.video_bitrate_kbps.unwrap_or(DEFAULT_VIDEO_BITRATE_KBPS);
    let preset = target.preset.as_deref().unwrap_or(DEFAULT_PRESET);
    let keyint = x264::keyint_frames(target.keyint_s, spec.fps, 1);
    let mut ini = format!(
        "[General]\nName={name}\n\n\
         [Output]\nMode=Simple\n\n\
         [SimpleOutput]\nStreamEncoder=x264\nVBitrate={bitrate}\nABitrate={audio}\nUseAdvanced=true\n\
         Preset={preset}\nx264Settings={opts}\n\n\
         [AdvOut]\nEncoder=obs_x264\nApplyServiceSettings=true\nTrack1Bitrate={audio}\n\n\
         [Video]\n",
        name = spec.name,
        audio = DEFAULT_AUDIO_BITRATE_KBPS,
        opts = x264::options(Some(keyint)),
    );
    if let Some((w, h)) = spec.resolution {
        ini += &format!("BaseCX={w}\nBaseCY={h}\nOutputCX={w}\nOutputCY={h}\n");
    }
    ini += &format!("FPSType=1\nFPSInt={}\n", spec.fps);
    let service = json!({
        "type": "rtmp_custom",
        "settings": { "server": target.server, "key": target.stream_key, "use_auth": false, "bwtest": false },
    });
    let encoder = json!({
        "rate_control": "CBR",
        "bitrate": bitrate,
        "keyint_sec": target.keyint_s,
        "preset": preset,
        "x264opts": x264::options(None),
        // NVENC, AMF and QSV name their B-frame count `bf`.
        "bf": 0,
    });
    ProfileFiles { basic_ini: ini, service_json: pretty(&service), stream_encoder_json: pretty(&encoder) }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("a JSON value serializes") + "\n"
}

/// Writes `files` into `dir` (created when missing); returns the paths written.
pub fn write_profile(dir: &Path, files: &ProfileFiles) -> Result<Vec<PathBuf>, ProfileError> {
    std::fs::create_dir_all(dir).map_err(|source| ProfileError::Write { path: dir.to_owned(), source })?;
    let mut written = Vec::new();
    for (name, contents) in [
        (BASIC_INI, &files.basic_ini),
        (SERVICE_JSON, &files.service_json),
        (STREAM_ENCODER_JSON, &files.stream_encoder_json),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|source| ProfileError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

// ---------- where OBS keeps its settings ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
    Windows,
}

impl Os {
    pub fn current() -> Os {
        if cfg!(target_os = "windows") {
            Os::Windows
        } else if cfg!(target_os = "macos") {
            Os::MacOs
        } else {
            Os::Linux
        }
    }
}

/// The environment that decides where OBS' settings are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirs {
    pub home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub appdata: Option<PathBuf>,
}

impl Dirs {
    pub fn from_env() -> Dirs {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        Dirs {
            home: var("HOME").or_else(|| var("USERPROFILE")),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            appdata: var("APPDATA"),
        }
    }
}

/// OBS' settings folders on `os`, most likely first: Linux `$XDG_CONFIG_HOME/obs-studio` (default
/// `~/.config/obs-studio`), then the Flatpak's `~/.var/app/com.obsproject.Studio/config/obs-studio`;
/// macOS `~/Library/Application Support/obs-studio`; Windows `%APPDATA%\obs-studio`.
pub fn config_dirs(os: Os, dirs: &Dirs) -> Result<Vec<PathBuf>, ProfileError> {
    let home = || dirs.home.clone().ok_or(ProfileError::NoHome("HOME"));
    Ok(match os {
        Os::Linux => {
            let home = home()?;
            let config = dirs.xdg_config_home.clone().unwrap_or_else(|| home.join(".config"));
            vec![config.join("obs-studio"), home.join(".var/app").join(FLATPAK_ID).join("config/obs-studio")]
        }
        Os::MacOs => vec![home()?.join("Library/Application Support/obs-studio")],
        Os::Windows => vec![dirs.appdata.clone().ok_or(ProfileError::NoHome("APPDATA"))?.join("obs-studio")],
    })
}

/// The first of `candidates` that exists (OBS has run there), else the first.
pub fn choose_config_dir(candidates: &[PathBuf], exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    candidates.iter().find(|d| exists(d)).or(candidates.first()).cloned()
}

/// The folder of profile `name` under OBS' settings folder `config_dir`.
pub fn profile_dir(config_dir: &Path, name: &str) -> PathBuf {
    config_dir.join("basic").join("profiles").join(safe_dir_name(name))
}

/// The folder of profile `name` for this user's OBS.
pub fn default_profile_dir(name: &str) -> Result<PathBuf, ProfileError> {
    let candidates = config_dirs(Os::current(), &Dirs::from_env())?;
    let config = choose_config_dir(&candidates, Path::is_dir).ok_or(ProfileError::NoHome("HOME"))?;
    Ok(profile_dir(&config, name))
}

/// A folder name for a profile name (OBS replaces characters file systems refuse).
pub fn safe_dir_name(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_control() || "<>:\"/\\|?*".contains(c) { '_' } else { c }).collect();
    let s = s.trim().trim_matches('.').to_owned();
    if s.is_empty() { "_".to_owned() } else { s }
}

// ---------- reading profiles back ----------

/// An INI file as OBS writes it (`[Section]`, `Key=Value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Ini {
    pub fn parse(text: &str) -> Ini {
        let mut ini = Ini::default();
        for line in text.trim_start_matches('\u{feff}').lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                ini.sections.push((name.trim().to_owned(), Vec::new()));
            } else if let Some((k, v)) = line.split_once('=') {
                if ini.sections.is_empty() {
                    ini.sections.push((String::new(), Vec::new()));
                }
                let section = &mut ini.sections.last_mut().expect("just pushed").1;
                section.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        ini
    }

    /// The value of `key` in `section` (the last one wins).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, kv)| kv.iter())
            .rfind(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Frames per second from a profile's `[Video]` section, as OBS reads it (default 30).
pub fn fps_of(ini: &Ini) -> (u32, u32) {
    let num = |k: &str| ini.get("Video", k).and_then(|v| v.parse::<u32>().ok());
    match ini.get("Video", "FPSType").unwrap_or("0") {
        "1" => (num("FPSInt").unwrap_or(30), 1),
        "2" => (num("FPSNum").unwrap_or(30), num("FPSDen").unwrap_or(1)),
        _ => match ini.get("Video", "FPSCommon").unwrap_or("30") {
            "29.97" => (30000, 1001),
            "59.94" => (60000, 1001),
            "24 NTSC" | "23.976" => (24000, 1001),
            other => (other.parse().unwrap_or(30), 1),
        },
    }
}

/// What a profile on disk streams with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileSettings {
    pub name: Option<String>,
    /// `Simple` or `Advanced` (OBS' default: Simple).
    pub output_mode: String,
    pub fps: (u32, u32),
    pub service_type: Option<String>,
    pub server: Option<String>,
    pub key: Option<String>,
    pub simple_encoder: String,
    pub simple_use_advanced: bool,
    pub simple_x264: String,
    pub simple_bitrate: Option<u32>,
    pub simple_preset: Option<String>,
    /// The Advanced mode's streaming encoder (`[AdvOut] Encoder`).
    pub adv_encoder: Option<String>,
    /// `streamEncoder.json` (empty when the file is missing).
    pub stream_encoder: serde_json::Value,
    pub ini: Ini,
}

impl ProfileSettings {
    /// Parses a profile's files (`stream_encoder_json` may be missing: OBS then uses defaults).
    pub fn parse(
        basic_ini: &str,
        service_json: Option<&str>,
        stream_encoder_json: Option<&str>,
    ) -> Result<ProfileSettings, serde_json::Error> {
        let ini = Ini::parse(basic_ini);
        let service: serde_json::Value = service_json.map(serde_json::from_str).transpose()?.unwrap_or_default();
        let stream_encoder = stream_encoder_json.map(serde_json::from_str).transpose()?.unwrap_or_else(|| json!({}));
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        Ok(ProfileSettings {
            name: ini.get("General", "Name").map(str::to_owned),
            output_mode: ini.get("Output", "Mode").unwrap_or("Simple").to_owned(),
            fps: fps_of(&ini),
            service_type: s(&service["type"]),
            server: s(&service["settings"]["server"]),
            key: s(&service["settings"]["key"]),
            simple_encoder: ini.get("SimpleOutput", "StreamEncoder").unwrap_or("x264").to_owned(),
            simple_use_advanced: ini.get("SimpleOutput", "UseAdvanced") == Some("true"),
            simple_x264: ini.get("SimpleOutput", "x264Settings").unwrap_or_default().to_owned(),
            simple_bitrate: ini.get("SimpleOutput", "VBitrate").and_then(|v| v.parse().ok()),
            simple_preset: ini.get("SimpleOutput", "Preset").map(str::to_owned),
            adv_encoder: ini.get("AdvOut", "Encoder").map(str::to_owned),
            stream_encoder,
            ini,
        })
    }

    /// The keyframe interval Simple mode's x264 options ask for, in frames, for `keyint_s`.
    pub fn keyint_frames(&self, keyint_s: u32) -> u32 {
        x264::keyint_frames(keyint_s, self.fps.0, self.fps.1)
    }

    /// What keeps this profile from streaming to `target` the way OnAir needs (empty: nothing).
    /// Checks the service and the encoder of the profile's output mode.
    pub fn problems(&self, target: &ObsTarget) -> Vec<String> {
        let mut p = Vec::new();
        if self.service_type.as_deref() != Some("rtmp_custom") {
            p.push(format!("stream service is {:?}, not rtmp_custom (Custom)", self.service_type));
        }
        if self.server.as_deref() != Some(target.server.as_str()) {
            p.push(format!("server is {:?}, not {}", self.server, target.server));
        }
        if self.key.as_deref() != Some(target.stream_key.as_str()) {
            p.push("stream key differs from OnAir's".to_owned());
        }
        if self.output_mode == "Advanced" {
            p.extend(self.advanced_problems(target));
        } else {
            if self.simple_encoder != "x264" {
                p.push(format!("Simple mode encoder is {}, not x264", self.simple_encoder));
            }
            if !self.simple_use_advanced {
                p.push("Simple mode: Enable Advanced Encoder Settings is off".to_owned());
            }
            p.extend(x264::check(&self.simple_x264, Some(self.keyint_frames(target.keyint_s))));
        }
        p
    }

    /// What is wrong with `streamEncoder.json` (the Advanced mode's streaming encoder).
    pub fn advanced_problems(&self, target: &ObsTarget) -> Vec<String> {
        let e = &self.stream_encoder;
        let mut p = Vec::new();
        if e["keyint_sec"].as_u64() != Some(u64::from(target.keyint_s)) {
            p.push(format!("keyint_sec is {}, not {}", e["keyint_sec"], target.keyint_s));
        }
        if e["rate_control"].as_str() != Some("CBR") {
            p.push(format!("rate_control is {}, not CBR", e["rate_control"]));
        }
        let encoder = self.adv_encoder.as_deref().unwrap_or("obs_x264");
        if encoder == "obs_x264" {
            p.extend(x264::check(e["x264opts"].as_str().unwrap_or_default(), None));
        } else if e["bf"].as_u64() != Some(0) {
            p.push(format!("{encoder}: Max B-frames (bf) is {}, not 0", e["bf"]));
        }
        p
    }
}

/// Reads the profile in `dir` back.
pub fn read_profile(dir: &Path) -> Result<ProfileSettings, ProfileError> {
    let read = |name: &str, required: bool| -> Result<Option<String>, ProfileError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProfileError::Read { path, source }),
        }
    };
    let ini = read(BASIC_INI, true)?.unwrap_or_default();
    let service = read(SERVICE_JSON, false)?;
    let encoder = read(STREAM_ENCODER_JSON, false)?;
    let parse = |name: &str, text: Option<&str>| -> Result<(), ProfileError> {
        if let Some(t) = text {
            serde_json::from_str::<serde_json::Value>(t)
                .map_err(|source| ProfileError::Json { path: dir.join(name), source })?;
        }
        Ok(())
    };
    parse(SERVICE_JSON, service.as_deref())?;
    parse(STREAM_ENCODER_JSON, encoder.as_deref())?;
    Ok(ProfileSettings::parse(&ini, service.as_deref(), encoder.as_deref()).expect("both JSON files parsed above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ObsTarget {
        ObsTarget::new("rtmp://192.168.1.20:1935/live", "show?policy=eyJ1cmxfZXhwaXJlIjoxfQ&signature=abc")
    }

    const EXPECTED_INI: &str = "\
[General]
Name=OnAir

[Output]
Mode=Simple

[SimpleOutput]
StreamEncoder=x264
VBitrate=2500
ABitrate=160
UseAdvanced=true
Preset=veryfast
x264Settings=keyint=60 bframes=0 scenecut=0

[AdvOut]
Encoder=obs_x264
ApplyServiceSettings=true
Track1Bitrate=160

[Video]
BaseCX=640
BaseCY=360
OutputCX=640
OutputCY=360
FPSType=1
FPSInt=30
";

    const EXPECTED_SERVICE: &str = r#"{
  "settings": {
    "bwtest": false,
    "key": "show?policy=eyJ1cmxfZXhwaXJlIjoxfQ&signature=abc",
    "server": "rtmp://192.168.1.20:1935/live",
    "use_auth": false
  },
  "type": "rtmp_custom"
}
"#;

    const EXPECTED_ENCODER: &str = r#"{
  "bf": 0,
  "bitrate": 2500,
  "keyint_sec": 2,
  "preset": "veryfast",
  "rate_control": "CBR",
  "x264opts": "bframes=0 scenecut=0"
}
"#;

    #[test]
    fn files_have_the_expected_contents() {
        let spec = ProfileSpec { resolution: Some((640, 360)), ..Default::default() };
        let files = profile_files(&target(), &spec);
        assert_eq!(files.basic_ini, EXPECTED_INI);
        assert_eq!(files.service_json, EXPECTED_SERVICE);
        assert_eq!(files.stream_encoder_json, EXPECTED_ENCODER);
    }

    #[test]
    fn options_follow_fps_keyint_bitrate_and_preset() {
        let mut t = target();
        t.keyint_s = 1;
        t.video_bitrate_kbps = Some(4000);
        t.preset = Some("superfast".into());
        let files = profile_files(&t, &ProfileSpec { name: "Show 2".into(), fps: 60, resolution: None });
        assert!(files.basic_ini.contains("x264Settings=keyint=60 bframes=0 scenecut=0\n"));
        assert!(files.basic_ini.contains("VBitrate=4000\n") && files.basic_ini.contains("Preset=superfast\n"));
        assert!(files.basic_ini.contains("Name=Show 2\n") && !files.basic_ini.contains("BaseCX"));
        assert!(files.stream_encoder_json.contains("\"keyint_sec\": 1,"));
        assert!(files.stream_encoder_json.contains("\"bitrate\": 4000,"));
    }

    #[test]
    fn written_files_read_back_without_problems() {
        let dir = std::env::temp_dir().join(format!("onair-obs-profile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = profile_files(&target(), &ProfileSpec::default());
        let written = write_profile(&dir, &files).unwrap();
        assert_eq!(written.len(), 3);
        let back = read_profile(&dir).unwrap();
        assert_eq!(back.name.as_deref(), Some("OnAir"));
        assert_eq!(back.output_mode, "Simple");
        assert_eq!(back.fps, (30, 1));
        assert_eq!(back.simple_bitrate, Some(2500));
        assert!(back.problems(&target()).is_empty(), "{:?}", back.problems(&target()));
        assert!(back.advanced_problems(&target()).is_empty(), "{:?}", back.advanced_problems(&target()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(read_profile(&dir), Err(ProfileError::Read { .. })));
    }

    #[test]
    fn problems_of_obs_defaults() {
        // A profile as OBS creates it: Simple mode, no advanced encoder settings, Twitch.
        let ini = "\u{feff}[General]\nName=Untitled\n\n[Video]\nFPSType=0\nFPSCommon=29.97\n";
        let service = r#"{"type":"rtmp_common","settings":{"service":"Twitch","server":"auto","key":""}}"#;
        let p = ProfileSettings::parse(ini, Some(service), None).unwrap();
        assert_eq!(p.fps, (30000, 1001));
        assert_eq!(p.keyint_frames(2), 60);
        let problems = p.problems(&target());
        assert!(problems.iter().any(|s| s.contains("rtmp_common")), "{problems:?}");
        assert!(problems.iter().any(|s| s.contains("Advanced Encoder Settings is off")), "{problems:?}");
        assert!(problems.iter().any(|s| s.contains("keyint=60 is missing")), "{problems:?}");

        let adv = ProfileSettings::parse(
            "[Output]\nMode=Advanced\n[AdvOut]\nEncoder=jim_nvenc\n",
            Some(&profile_files(&target(), &ProfileSpec::default()).service_json),
            Some(r#"{"rate_control":"VBR","keyint_sec":0,"bf":2}"#),
        )
        .unwrap();
        assert_eq!(
            adv.problems(&target()),
            vec![
                "keyint_sec is 0, not 2",
                "rate_control is \"VBR\", not CBR",
                "jim_nvenc: Max B-frames (bf) is 2, not 0"
            ]
        );
    }

    #[test]
    fn ini_parsing() {
        let ini = Ini::parse("top=1\n[A]\nk = v=w\n; c\n[B]\nk=x\n[A]\nk=y\n");
        assert_eq!(ini.get("", "top"), Some("1"));
        assert_eq!(ini.get("A", "k"), Some("y"));
        assert_eq!(ini.get("B", "k"), Some("x"));
        assert_eq!(ini.get("C", "k"), None);
        let fps = |s: &str| fps_of(&Ini::parse(s));
        assert_eq!(fps(""), (30, 1));
        assert_eq!(fps("[Video]\nFPSType=1\nFPSInt=50"), (50, 1));
        assert_eq!(fps("[Video]\nFPSType=2\nFPSNum=60000\nFPSDen=1001"), (60000, 1001));
        assert_eq!(fps("[Video]\nFPSCommon=60"), (60, 1));
    }

    #[test]
    fn profile_folders_per_os() {
        let dirs = Dirs {
            home: Some("/home/me".into()),
            xdg_config_home: None,
            appdata: Some(r"C:\Users\me\AppData\Roaming".into()),
        };
        let linux = config_dirs(Os::Linux, &dirs).unwrap();
        assert_eq!(
            linux,
            vec![
                PathBuf::from("/home/me/.config/obs-studio"),
                PathBuf::from("/home/me/.var/app/com.obsproject.Studio/config/obs-studio")
            ]
        );
        let xdg = Dirs { xdg_config_home: Some("/cfg".into()), ..dirs.clone() };
        assert_eq!(config_dirs(Os::Linux, &xdg).unwrap()[0], PathBuf::from("/cfg/obs-studio"));
        assert_eq!(
            config_dirs(Os::MacOs, &dirs).unwrap(),
            vec![PathBuf::from("/home/me/Library/Application Support/obs-studio")]
        );
        assert_eq!(
            config_dirs(Os::Windows, &dirs).unwrap(),
            vec![PathBuf::from(r"C:\Users\me\AppData\Roaming").join("obs-studio")]
        );
        assert!(matches!(config_dirs(Os::Windows, &Dirs::default()), Err(ProfileError::NoHome("APPDATA"))));
        // Only the Flatpak has run: its folder is chosen; neither: the native one.
        let flatpak = linux[1].clone();
        assert_eq!(choose_config_dir(&linux, |d| d == flatpak).unwrap(), flatpak);
        assert_eq!(choose_config_dir(&linux, |_| false).unwrap(), linux[0]);
        assert_eq!(profile_dir(&linux[0], "OnAir"), PathBuf::from("/home/me/.config/obs-studio/basic/profiles/OnAir"));
        assert_eq!(safe_dir_name("a/b:c"), "a_b_c");
        assert_eq!(safe_dir_name(".."), "_");
    }
}
