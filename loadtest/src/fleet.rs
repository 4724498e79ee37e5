//! A fleet: the set of simulated connections of one run, opened at a controlled rate and
//! stopped together.
//!
//! [`Fleet`] is what scenarios use: either one [`LocalFleet`] (connections as tasks of this
//! process, see `local_fleet`) or several worker subprocesses (see `worker`), each holding
//! a slice of the connections, with the same operations: start, snapshot, churn rate,
//! slow-down mark, stop.

use std::time::Duration;

use tokio::time::Instant;

use crate::local_fleet::{FleetSpec, LocalFleet};
use crate::stats::{CounterSnapshot, Snapshot};
use crate::worker::RemoteFleet;

/// The connections of a run, in this process or spread over worker processes.
#[derive(Debug)]
pub enum Fleet {
    Local(LocalFleet),
    Remote(RemoteFleet),
}

impl Fleet {
    /// Starts `spec` in-process when `workers` is 0, else split over that many workers.
    /// `deadline` bounds the life of worker processes, whatever happens to this one.
    pub async fn start(
        spec: FleetSpec,
        workers: usize,
        deadline: Duration,
    ) -> anyhow::Result<Fleet> {
        if workers == 0 {
            return Ok(Fleet::Local(LocalFleet::start(spec)));
        }
        Ok(Fleet::Remote(
            RemoteFleet::start(spec.split(workers), deadline).await?,
        ))
    }

    pub fn snapshot(&self) -> Snapshot {
        match self {
            Fleet::Local(local) => local.snapshot(),
            Fleet::Remote(remote) => remote.snapshot(),
        }
    }

    /// The counters alone: cheap in process (no histogram is merged), for loops that
    /// poll often while deliveries are being timed.
    pub fn counters(&self) -> CounterSnapshot {
        match self {
            Fleet::Local(local) => local.counters(),
            Fleet::Remote(remote) => remote.snapshot().counters,
        }
    }

    pub async fn stop(
        self,
        published: Option<Vec<u64>>,
        grace: Duration,
    ) -> anyhow::Result<Snapshot> {
        match self {
            Fleet::Local(local) => Ok(local.stop(published, grace).await),
            Fleet::Remote(remote) => remote.stop(published, grace).await,
        }
    }

    /// Sets the churn rate of the whole fleet (durable fleets), split over the workers.
    pub async fn set_churn(&mut self, per_sec: f64) -> anyhow::Result<()> {
        match self {
            Fleet::Local(local) => {
                local.set_churn(per_sec);
                Ok(())
            }
            Fleet::Remote(remote) => remote.set_churn(per_sec).await,
        }
    }

    /// See [`LocalFleet::slow_down`]; the same mark goes to every worker.
    pub async fn slow_down(&mut self, mark_unix_us: u64) -> anyhow::Result<()> {
        match self {
            Fleet::Local(local) => {
                local.slow_down(mark_unix_us);
                Ok(())
            }
            Fleet::Remote(remote) => remote.slow_down(mark_unix_us).await,
        }
    }

    /// Process ids of the load generator: this process, then any workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![std::process::id()];
        if let Fleet::Remote(remote) = self {
            pids.extend(remote.pids());
        }
        pids
    }

    /// Waits until every connection is ready or failed, or until `limit`, calling `tick`
    /// with a fresh snapshot every `every`. Returns the last snapshot.
    pub async fn wait_settled(
        &self,
        total: u64,
        limit: Duration,
        every: Duration,
        mut tick: impl FnMut(&Snapshot),
    ) -> Snapshot {
        let until = Instant::now() + limit;
        loop {
            let snap = self.snapshot();
            tick(&snap);
            if snap.settled() >= total || Instant::now() >= until {
                return snap;
            }
            tokio::time::sleep(every).await;
        }
    }
}
