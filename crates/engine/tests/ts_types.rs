//! The TypeScript types of the status API (`/api/streams`) and the control API (`/api/control`)
//! live in `ui/src/api/`, generated from the Rust types with ts-rs. This test regenerates them:
//! it writes every file that differs (or is missing), removes files no type generates, and then
//! fails, so a changed Rust type shows up as a diff to commit and CI catches a stale file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use onair_engine::control::{BudgetStatus, ControlStatus, MatrixInfo, StreamControlStatus};
use onair_engine::control_api::{BudgetBody, ChatBody, LoginBody, TitleBody};
use onair_engine::events::{EndReason, EngineEvent};
use onair_engine::restream::{DestinationBody, RestreamState, RestreamStatus};
use onair_engine::status::{
    AudioStatus, ChatInfo, HttpsStatus, PortMapping, ReachState, ReachStatus, StreamStatus, Urls, VideoStatus, Viewers,
};
use ts_rs::{Config, TS};

/// File name → contents, for every exported type.
fn generated() -> BTreeMap<String, String> {
    // JSON numbers are numbers in the browser: u64 fields (bitrates, timestamps) stay below 2^53.
    let cfg = Config::new().with_large_int("number");
    let mut files = BTreeMap::new();
    macro_rules! export {
        ($($t:ty),* $(,)?) => {$(
            let name = <$t as TS>::output_path().unwrap().display().to_string();
            files.insert(name, <$t as TS>::export_to_string(&cfg).unwrap());
        )*};
    }
    export!(
        StreamStatus,
        VideoStatus,
        AudioStatus,
        Viewers,
        Urls,
        ChatInfo,
        ControlStatus,
        MatrixInfo,
        StreamControlStatus,
        EngineEvent,
        EndReason,
        TitleBody,
        ChatBody,
        LoginBody,
        ReachStatus,
        ReachState,
        PortMapping,
        HttpsStatus,
        RestreamStatus,
        RestreamState,
        DestinationBody,
        BudgetStatus,
        BudgetBody,
    );
    files
}

#[test]
fn typescript_api_types_are_up_to_date() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/src/api"));
    std::fs::create_dir_all(&dir).unwrap();
    let files = generated();
    let mut stale = Vec::new();
    for (name, text) in &files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).unwrap();
            stale.push(name.clone());
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".ts") && !files.contains_key(&name) {
            std::fs::remove_file(dir.join(&name)).unwrap();
            stale.push(format!("{name} (removed)"));
        }
    }
    assert!(stale.is_empty(), "ui/src/api was out of date and has been regenerated; commit: {stale:?}");
}
