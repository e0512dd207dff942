//! Which H.264 encoder a process uses: the user's `--encoder` choice, the
//! GStreamer elements, the Debian packages that provide them, and the error
//! lines that say what to install. Shared by every binary that encodes
//! (the RTSP bridge, the recorder); each keeps its own encoder settings.
//!
//! With the `gst` feature, [`Encoder::resolve`] asks GStreamer's registry;
//! [`Encoder::resolve_with`] takes any "is this element installed" answer.
#![forbid(unsafe_code)]

use anyhow::bail;
use shm_proto::PixelFormat;

/// Which H.264 encoder the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderChoice {
    /// x264enc if installed, else openh264enc.
    Auto,
    /// x264enc (gstreamer1.0-plugins-ugly).
    X264,
    /// openh264enc (gstreamer1.0-plugins-bad).
    OpenH264,
}

impl EncoderChoice {
    /// Parses an `--encoder` value: `auto`, `x264`, `openh264` (or the element names).
    pub fn parse(s: &str) -> anyhow::Result<EncoderChoice> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => EncoderChoice::Auto,
            "x264" | "x264enc" => EncoderChoice::X264,
            "openh264" | "openh264enc" => EncoderChoice::OpenH264,
            other => bail!("unknown --encoder {other:?}: expected auto, x264 or openh264"),
        })
    }
}

/// An installed H.264 encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// x264enc.
    X264,
    /// openh264enc.
    OpenH264,
}

impl Encoder {
    /// The GStreamer element name.
    pub const fn element(self) -> &'static str {
        match self {
            Encoder::X264 => "x264enc",
            Encoder::OpenH264 => "openh264enc",
        }
    }

    /// The `--encoder` value that asks for it.
    pub const fn flag(self) -> &'static str {
        match self {
            Encoder::X264 => "x264",
            Encoder::OpenH264 => "openh264",
        }
    }

    /// The Debian/Ubuntu package that provides the element.
    pub const fn package(self) -> &'static str {
        match self {
            Encoder::X264 => "gstreamer1.0-plugins-ugly",
            Encoder::OpenH264 => "gstreamer1.0-plugins-bad",
        }
    }

    /// Resolves the user's choice against GStreamer's registry (`gst::init` first).
    #[cfg(feature = "gst")]
    pub fn resolve(choice: EncoderChoice) -> anyhow::Result<Encoder> {
        Self::resolve_with(choice, |e| gstreamer::ElementFactory::find(e.element()).is_some())
    }

    /// Resolves the user's choice against an `installed` predicate: the
    /// errors name the missing element, the package that provides it and,
    /// for an explicit choice, whether the other encoder would do, so that
    /// the one error line says what to do.
    pub fn resolve_with(choice: EncoderChoice, installed: impl Fn(Encoder) -> bool) -> anyhow::Result<Encoder> {
        let (x264, openh264) = (Encoder::X264, Encoder::OpenH264);
        let wanted = match choice {
            EncoderChoice::Auto => {
                // x264 first, as documented: it takes NV12 sources without a conversion.
                if let Some(e) = [x264, openh264].into_iter().find(|&e| installed(e)) {
                    return Ok(e);
                }
                bail!(
                    "no H.264 encoder installed (GStreamer finds neither {} nor {}): install {} ({}) or {} ({})",
                    x264.element(),
                    openh264.element(),
                    x264.package(),
                    x264.element(),
                    openh264.package(),
                    openh264.element()
                )
            }
            EncoderChoice::X264 => x264,
            EncoderChoice::OpenH264 => openh264,
        };
        if installed(wanted) {
            return Ok(wanted);
        }
        let other = if wanted == x264 { openh264 } else { x264 };
        let alternative = if installed(other) {
            format!("{} is installed: use --encoder {} or --encoder auto", other.element(), other.flag())
        } else {
            format!("no other H.264 encoder is installed either ({} is in {})", other.element(), other.package())
        };
        bail!(
            "--encoder {}: {} is not installed (install {}); {alternative}",
            wanted.flag(),
            wanted.element(),
            wanted.package()
        )
    }

    /// The raw format fed to the encoder for frames of `pixel`: x264 takes
    /// NV12 and I420 as they are; everything else (and anything for
    /// openh264, which takes only I420) becomes I420.
    pub fn input_format(self, pixel: PixelFormat) -> &'static str {
        match (self, pixel) {
            (Encoder::X264, PixelFormat::Nv12) => "NV12",
            _ => "I420",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_names_the_missing_encoder_and_its_package() {
        let only = |e: Encoder| move |x: Encoder| x == e;
        assert_eq!(Encoder::resolve_with(EncoderChoice::Auto, |_| true).unwrap(), Encoder::X264);
        assert_eq!(Encoder::resolve_with(EncoderChoice::Auto, only(Encoder::OpenH264)).unwrap(), Encoder::OpenH264);
        let e = Encoder::resolve_with(EncoderChoice::Auto, |_| false).unwrap_err().to_string();
        assert!(e.starts_with("no H.264 encoder installed"), "{e}");
        assert!(e.contains("gstreamer1.0-plugins-ugly (x264enc)"), "{e}");
        assert!(e.contains("gstreamer1.0-plugins-bad (openh264enc)"), "{e}");
        let e = Encoder::resolve_with(EncoderChoice::X264, only(Encoder::OpenH264)).unwrap_err().to_string();
        assert!(e.contains("x264enc is not installed (install gstreamer1.0-plugins-ugly)"), "{e}");
        assert!(e.contains("use --encoder openh264"), "{e}");
        let e = Encoder::resolve_with(EncoderChoice::OpenH264, |_| false).unwrap_err().to_string();
        assert!(e.contains("openh264enc is not installed (install gstreamer1.0-plugins-bad)"), "{e}");
        assert!(e.contains("no other H.264 encoder is installed either"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn choices_parse() {
        assert_eq!(EncoderChoice::parse("AUTO").unwrap(), EncoderChoice::Auto);
        assert_eq!(EncoderChoice::parse("x264enc").unwrap(), EncoderChoice::X264);
        assert_eq!(EncoderChoice::parse("openh264").unwrap(), EncoderChoice::OpenH264);
        assert!(EncoderChoice::parse("vp8").unwrap_err().to_string().contains("unknown --encoder"));
    }
}
