//! OnAir's Matrix chat. Each stream has a Matrix room: its name is the stream title, its messages
//! are the live chat. The chat lives on the homeserver, so it persists, works while the stream is
//! offline, and anyone can join from their own Matrix app.
//!
//! [`Chat`] is the streamer's side: log in once ([`Chat::login`]; the session goes to a
//! [`SessionStore`], the OS keyring in OnAir) and [`Chat::restore`] it on later starts; ensure a
//! room per stream ([`Chat::ensure_room`]: `#onair_<stream>:<server>`, or the Cactus Comments
//! scheme, see [`MatrixConfig`]); keep the title and the room name in step ([`Chat::set_title`],
//! [`Chat::title`] and [`ChatEvent::TitleChanged`] with the name event's time, so the caller can
//! let the newer title win); post live notices; read and write chat ([`Chat::subscribe`],
//! [`Chat::send`]). Connection trouble shows in [`Chat::status`], never as a panic.

mod chat;
mod config;
mod error;
mod store;

pub use chat::{Chat, ChatEvent, MatrixStatus, RoomInfo, RoomName};
pub use config::{CACTUS_ALIAS_TEMPLATE, DEFAULT_ALIAS_TEMPLATE, MatrixConfig};
pub use error::{Error, Result};
pub use store::{MemoryStore, SESSION_ENTRY, SessionStore, StoreError};
