//! The charts of a run, drawn with `plotters` as PNG and SVG: the hit ratio over time (with
//! the offline OPT and LRU ratios as reference lines, and scale events marked), and a latency
//! CDF per system.
//!
//! Text needs a font, which `plotters` renders with `ab_glyph` from a TrueType file found at
//! run time: `$CACHE_BENCH_FONT`, else a sans-serif font in the usual system directories
//! (Debian's `fonts-dejavu-core` provides one). With no font, the PNGs are not written, the
//! SVGs are written without text, and [`write_charts`] says so in its [`Charts::font_error`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;

use crate::runner::{Sample, ScaleEvent};

/// The environment variable that names a TrueType font file for chart text.
pub const FONT_ENV: &str = "CACHE_BENCH_FONT";

/// Font files tried, in order, when [`FONT_ENV`] is not set.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Directories searched for any `.ttf` file when no candidate exists.
const FONT_DIRS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts"];

fn find_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let is_ttf = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf"));
    // Prefer a regular sans face among this directory's files.
    let files: Vec<&PathBuf> = entries.iter().filter(|p| is_ttf(p)).collect();
    let regular = files.iter().find(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.contains("Sans") && !name.contains("Bold") && !name.contains("Oblique")
    });
    if let Some(p) = regular.or(files.first()) {
        return Some((*p).clone());
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| find_ttf(p, depth - 1))
}

/// Registers a font for chart text, once per process. Returns the font file used.
///
/// # Errors
/// A message saying where fonts were looked for and how to provide one.
pub fn ensure_font() -> Result<PathBuf, String> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path = match std::env::var_os(FONT_ENV) {
            Some(p) => PathBuf::from(p),
            None => FONT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .or_else(|| FONT_DIRS.iter().find_map(|d| find_ttf(Path::new(d), 4)))
                .ok_or_else(|| {
                    format!(
                        "no TrueType font found for chart text (looked in {} and {}); install \
                         one (Debian: apt-get install fonts-dejavu-core) or set {FONT_ENV} to \
                         a .ttf file",
                        FONT_CANDIDATES[0],
                        FONT_DIRS.join(", ")
                    )
                })?,
        };
        let bytes =
            std::fs::read(&path).map_err(|e| format!("reading font {}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process; this is read once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        for family in ["sans-serif", "serif", "monospace"] {
            plotters::style::register_font(family, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a usable TrueType font", path.display()))?;
        }
        Ok(path)
    })
    .clone()
}

/// One system's timeline, for the hit-ratio chart.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The system's name.
    pub system: String,
    /// Its cumulative samples.
    pub samples: Vec<Sample>,
}

/// One system's latencies, for the CDF chart.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// The system's name.
    pub system: String,
    /// Its latency histogram, in microseconds.
    pub histogram: Histogram<u64>,
}

/// What the charts show.
#[derive(Debug, Clone, Default)]
pub struct ChartData {
    /// A title line naming the workload.
    pub title: String,
    /// Systems measured over time.
    pub timelines: Vec<Timeline>,
    /// Offline reference hit ratios, drawn as horizontal lines: `(name, ratio)`.
    pub references: Vec<(String, f64)>,
    /// Scale events of the system under test.
    pub scale_events: Vec<ScaleEvent>,
    /// Latency histograms per system.
    pub latencies: Vec<Latencies>,
}

/// The files written.
#[derive(Debug, Clone, Default)]
pub struct Charts {
    /// Paths of the files written.
    pub files: Vec<PathBuf>,
    /// Why the PNGs were not written and the SVGs have no text, if no font was found.
    pub font_error: Option<String>,
}

/// The hit ratio of each window of samples, with at most `max_points` windows: `(t, ratio)`
/// at the end of each window with at least one get.
pub fn windowed_hit_ratio(samples: &[Sample], max_points: usize) -> Vec<(f64, f64)> {
    if samples.len() < 2 {
        return Vec::new();
    }
    let step = (samples.len() - 1).div_ceil(max_points.max(1)).max(1);
    let mut out = Vec::new();
    let mut prev = samples[0];
    let mut i = step;
    loop {
        let cur = samples[i.min(samples.len() - 1)];
        let gets = cur.gets - prev.gets;
        if gets > 0 {
            out.push((cur.t_s, (cur.hits - prev.hits) as f64 / gets as f64));
        }
        prev = cur;
        if i >= samples.len() - 1 {
            return out;
        }
        i += step;
    }
}

/// Points of a latency CDF: `(latency µs, fraction of requests at or below it)`.
pub fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let mut seen = 0u64;
    h.iter_recorded()
        .map(|v| {
            seen += v.count_at_value();
            (
                h.highest_equivalent(v.value_iterated_to()).max(1) as f64,
                seen as f64 / total as f64,
            )
        })
        .collect()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn color_of(system: &str, i: usize) -> RGBColor {
    match system {
        "cachelet" => COLORS[0],
        "redis" => COLORS[1],
        "store" => COLORS[2],
        "opt" => COLORS[3],
        "lru" => COLORS[4],
        _ => COLORS[i % COLORS.len()],
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws one line per system, with a legend entry when the chart has text.
fn draw_lines<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    lines: &[(String, Vec<(f64, f64)>)],
    text: bool,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = color_of(name, i);
        let series = chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
        if text {
            series.label(name.as_str()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    Ok(())
}

fn draw_hit_ratio<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    data: &ChartData,
    text: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = data
        .timelines
        .iter()
        .map(|t| (t.system.clone(), windowed_hit_ratio(&t.samples, 200)))
        .collect();
    let t_max = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                format!("Hit ratio over time: {}", data.title),
                ("sans-serif", 22),
            )
            .x_label_area_size(50)
            .y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(0.0..t_max * 1.02, 0.0..1.05)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("time since the start of the run (s)")
            .y_desc("hit ratio (gets served by a cache)")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18));
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw()?;
    draw_lines(&mut chart, &lines, text)?;
    for (i, (name, ratio)) in data.references.iter().enumerate() {
        let color = color_of(name, i + 3);
        let dashed = (0..40).map(|k| {
            let a = t_max * 1.02 * f64::from(k) / 40.0;
            let b = a + t_max * 1.02 / 80.0;
            PathElement::new([(a, *ratio), (b, *ratio)], color.stroke_width(2))
        });
        let series = chart.draw_series(dashed)?;
        if text {
            series
                .label(format!("{name} (offline, whole run)"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 8, y)], color.stroke_width(3))
                });
        }
    }
    for e in &data.scale_events {
        let t = e.t_ms as f64 / 1000.0;
        chart.draw_series(std::iter::once(PathElement::new(
            [(t, 0.0), (t, 1.05)],
            BLACK.stroke_width(1),
        )))?;
        if text {
            chart.draw_series(std::iter::once(Text::new(
                format!("epoch {}: {} nodes", e.epoch, e.members),
                (t, 1.02),
                ("sans-serif", 14).into_font(),
            )))?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn draw_cdf<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    data: &ChartData,
    text: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = data
        .latencies
        .iter()
        .map(|l| (l.system.clone(), cdf(&l.histogram)))
        .collect();
    let hi = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .fold(10.0f64, f64::max);
    let lo = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .fold(hi, f64::min)
        .max(1.0);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(format!("Latency CDF: {}", data.title), ("sans-serif", 22))
            .x_label_area_size(50)
            .y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.02)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("latency per request (µs, log scale)")
            .y_desc("fraction of requests at or below")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18));
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw()?;
    draw_lines(&mut chart, &lines, text)?;
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

const SIZE: (u32, u32) = (1000, 600);

/// Writes `hit_ratio.{png,svg}` and `latency_cdf.{png,svg}` into `dir` (created if missing).
///
/// # Errors
/// When the directory cannot be created or a chart cannot be drawn. A missing font is not an
/// error: it is reported in [`Charts::font_error`].
pub fn write_charts(dir: &Path, data: &ChartData) -> anyhow::Result<Charts> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let font = ensure_font();
    let text = font.is_ok();
    let mut charts = Charts {
        files: Vec::new(),
        font_error: font.err(),
    };
    type Draw = fn(&ChartData, &Path, bool) -> DrawResult;
    let kinds: [(&str, Draw, Draw); 2] = [
        (
            "hit_ratio",
            |d, p, t| draw_hit_ratio(SVGBackend::new(p, SIZE).into_drawing_area(), d, t),
            |d, p, t| draw_hit_ratio(BitMapBackend::new(p, SIZE).into_drawing_area(), d, t),
        ),
        (
            "latency_cdf",
            |d, p, t| draw_cdf(SVGBackend::new(p, SIZE).into_drawing_area(), d, t),
            |d, p, t| draw_cdf(BitMapBackend::new(p, SIZE).into_drawing_area(), d, t),
        ),
    ];
    for (name, svg, png) in kinds {
        let path = dir.join(format!("{name}.svg"));
        svg(data, &path, text).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        charts.files.push(path);
        if text {
            let path = dir.join(format!("{name}.png"));
            png(data, &path, text)
                .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
            charts.files.push(path);
        }
    }
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: f64, gets: u64, hits: u64) -> Sample {
        Sample {
            t_s,
            ops: gets,
            gets,
            hits,
        }
    }

    #[test]
    fn windows_of_the_timeline() {
        let samples = [s(0.0, 0, 0), s(1.0, 10, 5), s(2.0, 20, 15), s(3.0, 20, 15)];
        assert_eq!(
            windowed_hit_ratio(&samples, 10),
            vec![(1.0, 0.5), (2.0, 1.0)]
        );
        assert_eq!(windowed_hit_ratio(&samples, 1), vec![(3.0, 0.75)]);
        assert!(windowed_hit_ratio(&samples[..1], 10).is_empty());
    }

    #[test]
    fn cdf_ends_at_one() {
        let mut h = crate::runner::histogram();
        for v in [10, 10, 20, 1000] {
            h.record(v).unwrap();
        }
        let c = cdf(&h);
        assert_eq!(c.first().unwrap().1, 0.5);
        assert_eq!(c.last().unwrap().1, 1.0);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }
}
