//! The edge's integration tests, in one binary: each module is a topic, and `common` starts real
//! origins and a real `dime-edge` process on loopback ports.

mod common;

mod cache_body_files;
mod cache_fill;
mod cache_origin_protection;
mod cache_ranges_purge;
mod cache_rfc;
mod cache_video;
mod chaos_floods;
mod chaos_h2;
mod chaos_lock;
mod chaos_memory;
mod chaos_origin;
mod chaos_pools;
mod chaos_viewers;
mod cli;
mod config_check;
mod config_compile;
mod connections;
mod headers;
mod hit_header;
mod interim;
mod layering;
mod ll_hls;
mod logs;
mod observability;
mod pools;
mod reload;
mod request_path;
mod rfc_age;
mod rfc_cdn;
mod rfc_stale;
mod routing;
mod shutdown;
mod status;
mod streaming;
mod tls;
mod upgrade;
