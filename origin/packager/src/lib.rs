//! Dime's HLS packager: live channels from a camera or a test pattern, and VoD files, on GStreamer.

#![warn(missing_docs)]

pub mod cli;
pub mod health;
pub mod live;
pub mod ll_rules;
pub mod options;
pub mod pipeline;
pub mod playlist;
pub mod sample;
pub mod vod;
