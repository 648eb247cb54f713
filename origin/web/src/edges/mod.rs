//! The edge fleet (`--edges`): which edges exist, how healthy and loaded each one is now, and
//! the ordered list of edges each viewer's player gets.
//!
//! [`config`] reads the file, [`health`] polls the edges, [`steering`] ranks them per viewer.

pub mod config;
pub mod health;
pub mod steering;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use config::{EdgeSpec, EdgesError, EdgesErrors, FleetConfig, PollSpec};
pub use health::{EdgeHealth, Poller};

/// The fleet and its live health, shared by the poller and the handlers.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    health: health::HealthTable,
}

/// One edge as `GET /api/edges` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeStatus {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// The base viewers load streams from.
    pub url: String,
    /// What the poller knows.
    #[serde(flatten)]
    pub health: EdgeHealth,
}

/// The edges for one viewer, best first.
#[derive(Debug, Clone, Serialize)]
pub struct Steering {
    /// The viewer's address, as the web app sees it (after `--trusted-proxy`).
    pub client: IpAddr,
    /// The region that address is in.
    pub region: String,
    /// Stream bases, best first: every edge, the down ones last.
    pub bases: Vec<String>,
    /// The same edges' names, in the same order.
    pub edges: Vec<String>,
}

impl Fleet {
    /// A fleet whose edges all count as up until polled.
    pub fn new(config: FleetConfig) -> Self {
        let health = vec![EdgeHealth::default(); config.edges.len()];
        Self {
            config,
            health: Arc::new(Mutex::new(health)),
        }
    }

    /// The checked configuration.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Starts polling every edge; dropping the result stops it. Needs a Tokio runtime.
    pub fn spawn_poller(&self) -> Poller {
        Poller::spawn(
            &self.config.edges,
            self.config.poll,
            Arc::clone(&self.health),
        )
    }

    fn health(&self) -> Vec<EdgeHealth> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every edge with its current health, in file order.
    pub fn status(&self) -> Vec<EdgeStatus> {
        self.config
            .edges
            .iter()
            .zip(self.health())
            .map(|(edge, health)| EdgeStatus {
                name: edge.name.clone(),
                region: edge.region.clone(),
                url: edge.url.clone(),
                health,
            })
            .collect()
    }

    /// The ordered edges for a viewer at `client`.
    pub fn steer(&self, client: IpAddr) -> Steering {
        let region = steering::region_of(&self.config, client).to_owned();
        let order = steering::rank(&self.config, &self.health(), &region);
        let edges = order.iter().map(|&i| &self.config.edges[i]);
        Steering {
            client,
            bases: edges.clone().map(|edge| edge.url.clone()).collect(),
            edges: edges.map(|edge| edge.name.clone()).collect(),
            region,
        }
    }
}
