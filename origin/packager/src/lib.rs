//! Dime's HLS packager: live channels from a camera or a test pattern, and VoD files, on GStreamer.
