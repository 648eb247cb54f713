//! Values given on the command line: frame size, bitrate, durations, parsed with precise errors.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A frame size in pixels, written `WIDTHxHEIGHT` (e.g. `1280x720`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Width in pixels (even: 4:2:0 chroma is subsampled by two).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a frame size: write WIDTHxHEIGHT, e.g. 1280x720");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        if !(16..=7680).contains(&width) || !(16..=4320).contains(&height) {
            return Err(format!(
                "{s:?} is out of range: width 16..7680, height 16..4320"
            ));
        }
        // H.264 4:2:0 needs even dimensions; x264 would refuse odd ones later, less clearly.
        if width % 2 == 1 || height % 2 == 1 {
            return Err(format!(
                "{s:?}: width and height must be even for 4:2:0 video"
            ));
        }
        Ok(Size { width, height })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A video bitrate, written in bits per second with an optional `k` or `M` suffix (`2500k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitrate {
    /// Kilobits per second (what x264enc takes).
    pub kbps: u32,
}

impl FromStr for Bitrate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a bitrate: write e.g. 2500k or 4M");
        let (number, scale) = match s.trim() {
            t if t.ends_with(['k', 'K']) => (&t[..t.len() - 1], 1_000u64),
            t if t.ends_with('M') => (&t[..t.len() - 1], 1_000_000),
            t => (t, 1),
        };
        let bits = number.parse::<u64>().map_err(|_| bad())? * scale;
        let kbps = bits / 1000;
        if !(50..=100_000).contains(&kbps) {
            return Err(format!("{s:?} is out of range: 50k to 100M"));
        }
        Ok(Bitrate { kbps: kbps as u32 })
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}k", self.kbps)
    }
}

/// Parses a positive duration such as `1s`, `500ms` or `20s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write e.g. 1s, 500ms or 2m"))?;
    if duration.is_zero() {
        return Err(format!("{s:?}: the duration must be more than zero"));
    }
    Ok(duration)
}

/// Parses a frame rate in frames per second, 1 to 120.
pub fn parse_fps(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(fps) if (1..=120).contains(&fps) => Ok(fps),
        _ => Err(format!(
            "{s:?} is not a frame rate: a whole number from 1 to 120"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_odd_or_garbage_ones_explain_why_not() {
        assert_eq!(
            "1280x720".parse(),
            Ok(Size {
                width: 1280,
                height: 720
            })
        );
        assert_eq!("320X180".parse::<Size>().unwrap().to_string(), "320x180");
        assert!("1280*720"
            .parse::<Size>()
            .unwrap_err()
            .contains("WIDTHxHEIGHT"));
        assert!("321x180".parse::<Size>().unwrap_err().contains("even"));
        assert!("0x0".parse::<Size>().unwrap_err().contains("out of range"));
    }

    #[test]
    fn bitrates_take_k_and_m_suffixes() {
        assert_eq!("2500k".parse(), Ok(Bitrate { kbps: 2500 }));
        assert_eq!("4M".parse(), Ok(Bitrate { kbps: 4000 }));
        assert_eq!("300000".parse(), Ok(Bitrate { kbps: 300 }));
        assert!("fast".parse::<Bitrate>().unwrap_err().contains("2500k"));
        assert!("1k"
            .parse::<Bitrate>()
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn durations_and_frame_rates_reject_nonsense() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert_eq!(parse_fps("30"), Ok(30));
        assert!(parse_fps("0").is_err());
        assert!(parse_fps("29.97").is_err());
    }
}
