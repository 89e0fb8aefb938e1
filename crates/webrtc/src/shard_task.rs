//! The task that drives one [`Shard`]: it waits for the next input (a command from the API
//! handle, a packet from the socket tasks, a media unit from the feeders, a timer, the
//! once-a-second housekeeping), hands it to the shard with the current time, sends what the
//! shard put in its outbox ([`UdpSender`]) and logs the shard's rates once a second.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::ShardStats;
use crate::feed::FeedMsg;
use crate::net::{NetIn, UdpSender};
use crate::routes::SharedRoutes;
use crate::shard::{Counters, NewSession, Shard};

/// What the API handle asks a shard.
pub(crate) enum ShardCommand {
    Add { session: Box<NewSession>, reply: oneshot::Sender<()> },
    Close { key: u64, reply: oneshot::Sender<bool> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// Media units taken in one go before the outbox is sent.
const MEDIA_BATCH: usize = 64;

pub(crate) struct ShardTask {
    pub shard: Shard,
    pub sender: UdpSender,
    pub stats: Arc<Counters>,
    pub routes: Arc<SharedRoutes>,
    pub commands: mpsc::Receiver<ShardCommand>,
    pub net: mpsc::Receiver<NetIn>,
    pub media: mpsc::Receiver<FeedMsg>,
    /// The socket tasks stop when the last shard does.
    pub _io: Arc<IoTasks>,
}

/// Socket tasks, aborted when dropped.
pub(crate) struct IoTasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for IoTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn wall_clock() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

impl ShardTask {
    pub async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged = (Instant::now(), ShardStats::default());
        let mut woke = Instant::now();
        loop {
            self.shard.handle_timeout(Instant::now());
            while self.shard.poll_event().is_some() {}
            self.sender.send(self.shard.outbox(), &self.stats).await;
            self.stats.busy_ns.fetch_add(woke.elapsed().as_nanos() as u64, Relaxed);
            let next_timer = self.shard.poll_timeout();
            let timer = async {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(ShardCommand::Add { session, reply }) => {
                        self.shard.add(Instant::now(), *session);
                        let _ = reply.send(());
                    }
                    Some(ShardCommand::Close { key, reply }) => {
                        let _ = reply.send(self.shard.close(Instant::now(), key));
                    }
                    Some(ShardCommand::Shutdown { reply }) => {
                        self.stop("server shutdown").await;
                        let _ = reply.send(());
                        break;
                    }
                    None => {
                        self.stop("server handle dropped").await;
                        break;
                    }
                },
                Some(net) = self.net.recv() => self.shard.handle_net(Instant::now(), net),
                // Before media: a saturated shard must still send its sender reports, time out
                // sessions and log its stats once a second.
                _ = housekeeping.tick() => {
                    let now = Instant::now();
                    self.shard.housekeeping(now, wall_clock());
                    logged = self.log_stats(now, logged);
                }
                Some(unit) = self.media.recv() => {
                    let now = Instant::now();
                    self.shard.handle_feed(now, unit);
                    // Take what else is queued now, so one send covers it all.
                    for _ in 0..MEDIA_BATCH {
                        match self.media.try_recv() {
                            Ok(unit) => self.shard.handle_feed(now, unit),
                            Err(_) => break,
                        }
                    }
                }
                _ = timer => {}
            }
            woke = Instant::now();
        }
    }

    async fn stop(&mut self, reason: &'static str) {
        self.shard.close_all(Instant::now(), reason);
        self.sender.send(self.shard.outbox(), &self.stats).await;
    }

    /// Once a second: a `debug` line on target `onair_webrtc::stats` with this shard's rates.
    fn log_stats(&self, now: Instant, (at, was): (Instant, ShardStats)) -> (Instant, ShardStats) {
        let cur = self.stats.snapshot();
        let secs = now.duration_since(at).as_secs_f64().max(1e-3);
        if cur.sessions == 0 && cur.packets_sent == was.packets_sent {
            return (now, cur);
        }
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
        debug!(
            target: "onair_webrtc::stats",
            "shard {}: {} sessions, busy {:.0} %, sent {:.0} pkt/s {:.1} Mb/s in {:.0} calls/s, rtp in {:.0} pkt/s, send errors {}, send blocked {}, tcp dropped {}, media dropped {}, net dropped {}, unrouted {}",
            self.shard.index(),
            cur.sessions,
            cur.busy.saturating_sub(was.busy).as_secs_f64() / secs * 100.0,
            rate(cur.packets_sent, was.packets_sent),
            rate(cur.bytes_sent, was.bytes_sent) * 8.0 / 1e6,
            rate(cur.send_calls, was.send_calls),
            rate(cur.rtp_in, was.rtp_in),
            cur.send_errors - was.send_errors,
            cur.send_blocked - was.send_blocked,
            cur.tcp_dropped - was.tcp_dropped,
            cur.media_dropped - was.media_dropped,
            cur.net_dropped - was.net_dropped,
            self.routes.unrouted.load(Relaxed),
        );
        (now, cur)
    }
}
