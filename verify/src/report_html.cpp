// The HTML report: one self-contained file (inline CSS, JS and SVG; no
// network), readable without JavaScript; JavaScript only adds sorting and
// filtering of the tables.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "qpack/format/text.hpp"
#include "qpack/verify/report.hpp"

namespace qpack {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

// A tensor name escaped, with a line-break opportunity after each '.' so
// that a long name wraps between its parts ("model.layers.0." /
// "mlp.down_proj.weight") instead of inside a word.
std::string esc_name(const std::string& s) {
  std::string o;
  for (char c : s) {
    o += esc(std::string(1, c));
    if (c == '.') o += "<wbr>";
  }
  return o;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Sort key for a numeric cell: JavaScript's Number() reads it back.
std::string key(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return fmt("%.17g", v);
}

std::string sci(double v) { return format_metric(v, 3, true); }
std::string fixed(double v, int p) { return format_metric(v, p, false); }

std::string num_td(double v, const std::string& shown, const char* cls = "") {
  return std::string("<td class=\"n ") + cls + "\" data-v=\"" + key(v) + "\">" + esc(shown) +
         "</td>";
}
std::string txt_td(const std::string& s, const char* cls = "") {
  return std::string("<td class=\"") + cls + "\">" + esc(s) + "</td>";
}

const char* kCss = R"CSS(
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--fg:#1f2328;--mut:#656d76;--bd:#d0d7de;--bg2:#f6f8fa;--bar:#0969da}
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--fg);margin:0;background:#fff}
main{max-width:2400px;margin:0 auto;padding:0 20px 40px}
header.v{padding:18px 20px;color:#fff}
header.v.pass{background:var(--ok)} header.v.fail{background:var(--bad)}
header.v h1{margin:0;font-size:22px} header.v p{margin:4px 0 0;opacity:.92;word-break:break-all}
h2{font-size:17px;margin:26px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--bd)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(135px,1fr));gap:10px;margin-top:16px}
.card{border:1px solid var(--bd);border-radius:6px;padding:8px 12px;background:var(--bg2)}
.card b{display:block;font-size:18px;white-space:nowrap} .card span{color:var(--mut);font-size:12px}
.issues{border:1px solid var(--bad);border-left:6px solid var(--bad);background:#fff5f5;padding:8px 14px;border-radius:6px;margin-top:14px}
.issues h3{margin:4px 0;color:var(--bad);font-size:15px} .issues summary{cursor:pointer;color:var(--mut);margin:0 0 6px 20px} .issues li{word-break:break-all}
.loud{font-weight:700;font-size:16px}
.scroll{overflow:auto;max-width:100%;border:1px solid var(--bd);border-radius:6px}
.scroll.tall{max-height:75vh}
.warns{border:1px solid var(--warn);border-left:6px solid var(--warn);background:#fff8e5;padding:8px 14px;border-radius:6px;margin-top:14px}
.warns h3{margin:4px 0;color:var(--warn);font-size:15px} .warns li{word-break:break-all}
.flag{border-radius:10px;padding:1px 8px;font-size:11.5px;color:#fff;background:var(--bad);white-space:nowrap}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;white-space:nowrap;text-align:left}
th{background:var(--bg2);position:sticky;top:0;z-index:2;cursor:pointer;user-select:none}
th:hover{background:#eaeef2} th.asc::after{content:" \25B2"} th.desc::after{content:" \25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:normal;overflow-wrap:break-word;min-width:16em;max-width:30em}
td.name,th.name{position:sticky;left:0;z-index:1;background:#fff;box-shadow:inset -1px 0 0 var(--bd)} th.name{z-index:3;background:var(--bg2)}
tr.failrow td{background:#fff0f0} tr:hover td{background:#f3f8ff}
.st{border-radius:10px;padding:1px 8px;font-size:11.5px;color:#fff}
.st.ok{background:var(--ok)} .st.gate_failed{background:var(--warn)} .st.bound_violated,.st.source_mismatch{background:var(--bad)}
.chart{border:1px solid var(--bd);border-radius:6px;padding:6px;background:#fff}
svg text{font:11px -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;fill:#444}
svg .bar{fill:var(--bar)} svg .bar.bad{fill:var(--bad)} svg .bar:hover{opacity:.75}
svg .grid{stroke:#e5e8eb} svg .axis{stroke:#8c959f} svg .thr{stroke:var(--bad);stroke-dasharray:6 4;stroke-width:1.5}
svg .cell{stroke:#fff;stroke-width:1} svg .cell.bad{stroke:#1f2328;stroke-width:2} svg .cell:hover{opacity:.8}
.legend{color:var(--mut);font-size:12px;margin:4px 2px}
.tools{margin:6px 0} .tools input{font:inherit;padding:4px 8px;width:320px;border:1px solid var(--bd);border-radius:6px}
dl.settings{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dl.settings dt{color:var(--mut)} dl.settings dd{margin:0;word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:var(--bg2);padding:8px;border-radius:6px;overflow:auto;font-size:12px}
footer{color:var(--mut);font-size:12px;margin-top:30px}
)CSS";

const char* kJs = R"JS(
(function(){
  function val(td){var v=td.getAttribute('data-v');if(v!==null){var n=Number(v);return isNaN(n)?-Infinity:n;}return td.textContent.toLowerCase();}
  document.querySelectorAll('table.sortable').forEach(function(tbl){
    var ths=tbl.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths,function(th,ci){
      th.title='Sort by '+th.textContent;
      th.addEventListener('click',function(){
        var asc=!th.classList.contains('asc');
        Array.prototype.forEach.call(ths,function(h){h.classList.remove('asc','desc');});
        th.classList.add(asc?'asc':'desc');
        var body=tbl.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=val(a.cells[ci]),y=val(b.cells[ci]);
          var c=(typeof x==='number'&&typeof y==='number')?(x<y?-1:x>y?1:0):String(x).localeCompare(String(y));
          return asc?c:-c;});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var f=document.getElementById('filter');
  if(f){f.addEventListener('input',function(){var q=f.value.toLowerCase();
    document.querySelectorAll('#tensors tbody tr').forEach(function(r){
      r.style.display=r.cells[1].textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
})();
)JS";

double nice_step(double range, int target_ticks) {
  if (!(range > 0)) return 1;
  const double raw = range / target_ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

struct Bar {
  std::string label, tip;
  double value;  // NaN: no bar
  bool bad;
};

// A bar chart with a y axis, optional dashed threshold line and tooltips.
std::string bar_chart(const std::vector<Bar>& bars, const std::string& y_title, bool percent,
                      std::optional<double> threshold, const std::string& thr_label) {
  const int W = 1300, H = 290, ml = 70, mr = 16, mt = 16, mb = 58;
  const double pw = W - ml - mr, ph = H - mt - mb;
  double vmax = 0;
  for (const auto& b : bars)
    if (std::isfinite(b.value)) vmax = std::max(vmax, b.value);
  if (threshold && std::isfinite(*threshold)) vmax = std::max(vmax, *threshold);
  if (!(vmax > 0)) vmax = 1;
  const double step = nice_step(vmax, 5);
  const double top = std::ceil(vmax * 1.05 / step) * step;
  auto y = [&](double v) { return mt + ph - (v / top) * ph; };
  std::string s = "<svg viewBox=\"0 0 " + std::to_string(W) + " " + std::to_string(H) +
                  "\" width=\"100%\" role=\"img\" aria-label=\"" + esc(y_title) + " per layer\">";
  auto vlabel = [&](double v) {
    return percent ? (step * 100 < 0.1 ? fmt("%.3f%%", v * 100) : fmt("%.2f%%", v * 100))
                   : fmt("%g", v);
  };
  for (double v = 0; v <= top * (1 + 1e-9); v += step) {
    const double yy = y(v);
    s += "<line class=\"grid\" x1=\"" + fmt("%.1f", double(ml)) + "\" x2=\"" +
         fmt("%.1f", double(W - mr)) + "\" y1=\"" + fmt("%.1f", yy) + "\" y2=\"" + fmt("%.1f", yy) +
         "\"/>";
    s += "<text x=\"" + std::to_string(ml - 6) + "\" y=\"" + fmt("%.1f", yy + 4) +
         "\" text-anchor=\"end\">" + vlabel(v) + "</text>";
  }
  s += "<line class=\"axis\" x1=\"" + std::to_string(ml) + "\" x2=\"" + std::to_string(W - mr) +
       "\" y1=\"" + fmt("%.1f", y(0)) + "\" y2=\"" + fmt("%.1f", y(0)) + "\"/>";
  s += "<text transform=\"translate(14," + fmt("%.1f", mt + ph / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + esc(y_title) + "</text>";
  const size_t n = bars.size();
  const double slot = n ? pw / double(n) : pw;
  const double bw = std::max(1.0, std::min(48.0, slot * 0.72));
  const size_t label_every = std::max<size_t>(1, size_t(std::ceil(double(n) * 42.0 / pw)));
  for (size_t i = 0; i < n; ++i) {
    const Bar& b = bars[i];
    const double cx = ml + slot * (double(i) + 0.5);
    if (std::isfinite(b.value)) {
      const double v = std::max(0.0, b.value);
      const double yy = y(v), h = y(0) - yy;
      s += "<rect class=\"bar" + std::string(b.bad ? " bad" : "") + "\" x=\"" +
           fmt("%.1f", cx - bw / 2) + "\" y=\"" + fmt("%.1f", yy) + "\" width=\"" +
           fmt("%.1f", bw) + "\" height=\"" + fmt("%.1f", std::max(h, 0.5)) + "\"><title>" +
           esc(b.tip) + "</title></rect>";
    } else if (std::isinf(b.value)) {
      s += "<text x=\"" + fmt("%.1f", cx) + "\" y=\"" + fmt("%.1f", y(0) - 4) +
           "\" text-anchor=\"middle\">&#8734;<title>" + esc(b.tip) + "</title></text>";
    }
    if (i % label_every == 0)
      s += "<text x=\"" + fmt("%.1f", cx) + "\" y=\"" + fmt("%.1f", y(0) + 14) +
           "\" text-anchor=\"end\" transform=\"rotate(-35 " + fmt("%.1f", cx) + " " +
           fmt("%.1f", y(0) + 14) + ")\">" + esc(b.label) + "</text>";
  }
  if (threshold && std::isfinite(*threshold)) {
    const double yy = y(*threshold);
    s += "<line class=\"thr\" x1=\"" + std::to_string(ml) + "\" x2=\"" + std::to_string(W - mr) +
         "\" y1=\"" + fmt("%.1f", yy) + "\" y2=\"" + fmt("%.1f", yy) + "\"/>";
    s += "<text x=\"" + std::to_string(W - mr - 4) + "\" y=\"" + fmt("%.1f", yy - 5) +
         "\" text-anchor=\"end\" "
         "style=\"fill:#cf222e;paint-order:stroke;stroke:#fff;stroke-width:4px\">" +
         esc(thr_label) + "</text>";
  }
  s += "</svg>";
  return s;
}

// Relative error of every (kind, layer) pair as a colour grid: shows at a
// glance which projection of which block quantizes worst.
struct HeatCell {
  ErrorSums sums;
  bool bad = false;
  int tensors = 0;
};

std::string mix_color(double t) {
  // YlOrRd-like: #ffffcc -> #fd8d3c -> #bd0026
  const double stops[3][3] = {{255, 255, 204}, {253, 141, 60}, {189, 0, 38}};
  t = std::clamp(t, 0.0, 1.0);
  const int i = t < 0.5 ? 0 : 1;
  const double u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x",
                int(stops[i][0] + (stops[i + 1][0] - stops[i][0]) * u + 0.5),
                int(stops[i][1] + (stops[i + 1][1] - stops[i][1]) * u + 0.5),
                int(stops[i][2] + (stops[i + 1][2] - stops[i][2]) * u + 0.5));
  return buf;
}

// The relative error at which the heat map's colour is darkest.
double heat_scale_top(const VerifyPolicy& p) {
  const auto& thr = p.global.max_rel_error;
  return thr && std::isfinite(*thr) && *thr > 0 ? *thr : 0.25;
}

std::string heatmap(const VerifyReport& rep, const std::vector<std::string>& labels) {
  std::vector<std::string> kinds;
  for (const auto& k : rep.kinds)
    if (k.quantized > 0) kinds.push_back(k.key);
  if (kinds.empty()) return {};
  const size_t nl = rep.layers.size(), nk = kinds.size();
  std::vector<HeatCell> cells(nl * nk);
  for (const auto& t : rep.tensors) {
    if (!t.quantized || !t.compared) continue;
    const size_t k = size_t(std::find(kinds.begin(), kinds.end(), t.kind) - kinds.begin());
    size_t l = 0;
    while (l < nl && rep.layers[l].key != t.layer.label()) ++l;
    if (k >= nk || l >= nl) continue;
    HeatCell& c = cells[k * nl + l];
    c.sums.add(t.sums);
    c.bad = c.bad || t.status != TensorStatus::Ok;
    ++c.tensors;
  }
  double vmin = INFINITY, vmax = 0;
  for (const auto& c : cells)
    if (c.tensors) {
      const double v = c.sums.rel_error();
      if (std::isfinite(v)) {
        vmin = std::min(vmin, v);
        vmax = std::max(vmax, v);
      }
    }
  if (!std::isfinite(vmin)) vmin = vmax = 0;
  // An absolute scale (docs/verify-report.md section 5): 0 to the gate's
  // max_rel_error, or to a fixed 25 % without one. A relative min-max scale
  // made a 0.015-point spread on a passing report look alarming.
  const double scale_top = heat_scale_top(rep.policy);
  // Enough decimals (of a percentage) to tell the smallest and largest cells apart.
  const double span = (vmax - vmin) * 100;
  const int decimals = span > 0 ? std::clamp(int(std::ceil(-std::log10(span))) + 1, 1, 4) : 1;
  const std::string cell_fmt = "%." + std::to_string(decimals) + "f%%";
  // The left margin fits the longest kind label (about 6.6 px a character at
  // 11 px), so long names such as "bert.embeddings.word_embeddings" are not cut.
  size_t longest = 0;
  for (const auto& k : kinds) longest = std::max(longest, k.size());
  const int ml = std::clamp(int(double(longest) * 6.6) + 14, 150, 460), mr = 16, mt = 8, ch = 22,
            W = 1300;
  const double cw = std::min(110.0, double(W - ml - mr) / double(nl));
  const int mb = 70;
  const int H = mt + int(nk) * ch + mb;
  std::string s = "<svg viewBox=\"0 0 " + std::to_string(W) + " " + std::to_string(H) +
                  "\" width=\"100%\" role=\"img\" aria-label=\"relative error by kind and layer\">";
  s += "<defs><linearGradient id=\"hm\"><stop offset=\"0\" stop-color=\"" + mix_color(0) +
       "\"/><stop offset=\"0.5\" stop-color=\"" + mix_color(0.5) +
       "\"/><stop offset=\"1\" stop-color=\"" + mix_color(1) + "\"/></linearGradient></defs>";
  for (size_t k = 0; k < nk; ++k) {
    const double y = mt + double(k) * ch;
    s += "<text x=\"" + std::to_string(ml - 6) + "\" y=\"" + fmt("%.1f", y + ch * 0.68) +
         "\" text-anchor=\"end\">" + esc(kinds[k]) + "</text>";
    for (size_t l = 0; l < nl; ++l) {
      const HeatCell& c = cells[k * nl + l];
      if (!c.tensors) continue;
      const double v = c.sums.rel_error();
      const double t = std::clamp(v / scale_top, 0.0, 1.0);
      const double x = ml + double(l) * cw;
      s += "<rect class=\"cell" + std::string(c.bad ? " bad" : "") + "\" x=\"" + fmt("%.1f", x) +
           "\" y=\"" + fmt("%.1f", y) + "\" width=\"" + fmt("%.1f", cw) + "\" height=\"" +
           std::to_string(ch) + "\" fill=\"" +
           (std::isfinite(v) ? mix_color(t) : std::string("#000")) + "\"><title>" +
           esc(kinds[k] + " in " + rep.layers[l].key + ": rel error " + sci(v) + ", SNR " +
               fixed(c.sums.snr_db(), 2) + " dB, " + std::to_string(c.tensors) + " tensor(s)" +
               (c.bad ? " (failed)" : "")) +
           "</title></rect>";
      if (cw >= 56 && std::isfinite(v))
        s += "<text x=\"" + fmt("%.1f", x + cw / 2) + "\" y=\"" + fmt("%.1f", y + ch * 0.68) +
             "\" text-anchor=\"middle\" style=\"fill:" + (t > 0.6 ? "#fff" : "#333") +
             ";pointer-events:none\">" + fmt(cell_fmt.c_str(), v * 100) + "</text>";
    }
  }
  const size_t label_every = std::max<size_t>(1, size_t(std::ceil(14.0 / cw)));
  const double ly = mt + double(nk) * ch + 12;
  for (size_t l = 0; l < nl; l += label_every) {
    const double cx = ml + (double(l) + 0.5) * cw;
    s += "<text x=\"" + fmt("%.1f", cx) + "\" y=\"" + fmt("%.1f", ly) +
         "\" text-anchor=\"end\" transform=\"rotate(-35 " + fmt("%.1f", cx) + " " +
         fmt("%.1f", ly) + ")\">" + esc(labels[l]) + "</text>";
  }
  const double gy = H - 18;
  s += "<g class=\"heat-legend\" data-scale-min=\"0\" data-scale-max=\"" + key(scale_top) + "\">";
  s += "<text x=\"" + std::to_string(W - mr - 330) + "\" y=\"" + fmt("%.1f", gy + 10) +
       "\" text-anchor=\"end\">0%</text>";
  s += "<rect x=\"" + std::to_string(W - mr - 324) + "\" y=\"" + fmt("%.1f", gy) +
       "\" width=\"240\" height=\"12\" fill=\"url(#hm)\"/>";
  s += "<text x=\"" + std::to_string(W - mr - 78) + "\" y=\"" + fmt("%.1f", gy + 10) + "\">" +
       esc(fmt("%g%%", scale_top * 100)) + " rel error</text></g>";
  s += "</svg>";
  return s;
}

// Shorter x labels when every layer shares one stack ("3" for "model.layers.3").
std::vector<std::string> layer_labels(const std::vector<Rollup>& layers) {
  std::string stack;
  bool one_stack = true;
  for (const auto& l : layers) {
    if (l.layer_index < 0) continue;
    const std::string st = l.key.substr(0, l.key.rfind('.'));
    if (stack.empty())
      stack = st;
    else if (st != stack)
      one_stack = false;
  }
  std::vector<std::string> out;
  for (const auto& l : layers)
    out.push_back(l.layer_index < 0 ? "global"
                                    : (one_stack ? std::to_string(l.layer_index) : l.key));
  return out;
}

std::string status_badge(const std::string& st) {
  return "<span class=\"st " + st + "\">" + st + "</span>";
}

std::string ratio_td(uint64_t before, uint64_t after) {
  const auto r = compression_ratio(before, after);
  if (!r) return "<td class=\"n\" data-v=\"0\">-</td>";
  return num_td(*r, format_ratio(r));
}

}  // namespace

std::string verify_report_html(const VerifyReport& rep) {
  const bool pass = rep.verdict == Verdict::Pass;
  std::string h;
  h.reserve(1 << 16);
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
       "<title>qpack verify: " +
       esc(rep.file) + "</title><style>" + kCss + "</style></head><body>\n";

  const std::string verdict = verdict_text(rep.verdict);
  h += "<header class=\"v " + std::string(pass ? "pass" : "fail") + "\"><h1>qpack verify &mdash; " +
       esc(verdict) + "</h1><p>" + esc(rep.file) +
       (rep.source.empty() ? std::string(" &nbsp;(self-check, no source)")
                           : " &nbsp;vs&nbsp; " + esc(rep.source)) +
       " &nbsp;&middot;&nbsp; exit code " + std::to_string(verdict_exit_code(rep.verdict)) +
       "</p></header>\n<main>\n";

  // Summary cards.
  const ErrorSums& ms = rep.model.sums;
  size_t nq = 0;
  for (const auto& t : rep.tensors) nq += t.quantized;
  auto card = [&](const std::string& v, const std::string& label) {
    h += "<div class=\"card\"><b>" + esc(v) + "</b><span>" + esc(label) + "</span></div>";
  };
  h += "<section class=\"cards\">";
  card(std::to_string(rep.tensors.size()) + " / " + std::to_string(nq), "tensors / quantized");
  card(format_bytes(rep.model.source_bytes), "source tensors");
  card(format_bytes(rep.file_bytes), rep.file_format == "gguf"    ? "the GGUF file"
                                     : rep.file_format == "qpack" ? "the .qpack file"
                                                                  : "the model folder");
  card(format_ratio(compression_ratio(rep.model.source_bytes, rep.file_bytes)), "compression");
  if (rep.integrity_ok) {
    card(sci(ms.rel_error()), "relative error (model)");
    card(fixed(ms.snr_db(), 2) + " dB", "SNR (model)");
    card(fixed(ms.cosine(), 6), "cosine (model)");
    card(sci(ms.max_abs_err), "max |error|");
    card(std::to_string(rep.bound_violations),
         rep.bound_is_promise ? "bound violations (must be 0)"
                              : "beyond qpack's bound (not promised by this folder's quantizer)");
  }
  h += "</section>\n";

  // Problems, most severe first.
  if (!rep.integrity_ok) {
    h += "<div class=\"issues\"><h3>Integrity failure &mdash; nothing was compared</h3><ul>";
    for (const auto& i : rep.integrity_issues)
      h += "<li><b>" + esc(i.tensor.empty() ? rep.file : i.tensor) +
           (i.section.empty() ? "" : " / " + esc(i.section)) + "</b> [" + esc(i.code) +
           "]: " + esc(i.message) + "</li>";
    h += "</ul></div>\n";
  }
  bool any_mismatch = !rep.missing_from_qpack.empty();
  for (const auto& t : rep.tensors) any_mismatch = any_mismatch || !t.problems.empty();
  if (any_mismatch) {
    h += "<div class=\"issues\"><h3>Source mismatch</h3><ul>";
    for (const auto& n : rep.missing_from_qpack)
      h += "<li><b>" + esc(n) + "</b>: in the source checkpoint, missing from the " +
           (rep.file_format == "gguf"    ? "GGUF file"
            : rep.file_format == "qpack" ? ".qpack"
                                         : "model folder") +
           "</li>";
    for (const auto& t : rep.tensors)
      for (const auto& p : t.problems) h += "<li><b>" + esc(t.name) + "</b>: " + esc(p) + "</li>";
    h += "</ul></div>\n";
  }
  if (rep.bound_violations > 0 && !rep.bound_is_promise) {
    h += "<p>" + std::to_string(rep.bound_violations) +
         " element(s) lie beyond qpack's round-to-nearest bound (docs/quantization.md &sect;7); "
         "the folder's quantizer does not promise it, so they do not fail the run.</p>\n";
  } else if (rep.bound_violations > 0) {
    h += "<div class=\"issues\"><h3 class=\"loud\">ERROR BOUND VIOLATED: " +
         std::to_string(rep.bound_violations) +
         " element(s)</h3><p>These elements exceed the bound of docs/quantization.md &sect;7. "
         "Either this .qpack "
         "was not converted from this source checkpoint, or the quantizer has a bug: please report "
         "it.</p><ul>";
    for (const auto& t : rep.tensors)
      if (t.sums.bound_violations > 0)
        h += "<li><b>" + esc(t.name) + "</b>: " + std::to_string(t.sums.bound_violations) +
             " element(s), first at flat index " + std::to_string(t.sums.first_violation_index) +
             "</li>";
    h += "</ul></div>\n";
  }
  if (!rep.gate_failures.empty()) {
    h += "<div class=\"issues\"><h3>Quality gate: " + std::to_string(rep.gate_failures.size()) +
         " threshold(s) failed</h3><ul>";
    constexpr size_t kShown = 12;  // the rest folded: a large model can fail hundreds
    for (size_t i = 0; i < rep.gate_failures.size(); ++i) {
      const GateFailure& f = rep.gate_failures[i];
      if (i == kShown)
        h += "</ul><details><summary>" + std::to_string(rep.gate_failures.size() - kShown) +
             " more</summary><ul>";
      h += "<li><b>" + esc(f.tensor.empty() ? "model totals" : f.tensor) +
           "</b>: " + esc(f.metric) + " = " + esc(format_metric(f.value, 4, true)) + ", must be " +
           esc(f.op) + " " + esc(format_metric(f.limit, 4, true)) + "</li>";
    }
    h += rep.gate_failures.size() > kShown ? "</ul></details></div>\n" : "</ul></div>\n";
  }

  if (!rep.warnings.empty()) {
    h += "<div class=\"warns\"><h3>" + std::to_string(rep.warnings.size()) + " warning(s)</h3><ul>";
    for (const auto& w : rep.warnings) h += "<li>" + esc(w) + "</li>";
    h += "</ul></div>\n";
  }

  // Charts.
  if (rep.integrity_ok && !rep.layers.empty() && !rep.source.empty()) {
    const auto labels = layer_labels(rep.layers);
    std::vector<Bar> rel;
    for (size_t i = 0; i < rep.layers.size(); ++i) {
      const Rollup& l = rep.layers[i];
      bool bad = false;
      for (const auto& t : rep.tensors)
        if (t.layer.label() == l.key && t.status != TensorStatus::Ok) bad = true;
      const bool m = l.quantized > 0;
      const double r = m ? l.sums.rel_error() : NAN;
      const double sn = m ? l.sums.snr_db() : NAN;  // for the tooltip
      const std::string tip = l.key + ": rel error " + sci(r) + ", SNR " + fixed(sn, 2) +
                              " dB, cosine " + fixed(l.sums.cosine(), 6) + ", " +
                              std::to_string(l.quantized) + " quantized tensor(s); worst " +
                              (l.worst_tensor.empty() ? "-" : l.worst_tensor);
      rel.push_back({labels[i], tip, r, bad});
    }
    h += "<h2>Relative error per layer</h2><div class=\"chart\">";
    h += bar_chart(rel, "relative error ||x-x\u0302||/||x||", true, rep.policy.global.max_rel_error,
                   rep.policy.global.max_rel_error
                       ? "max_rel_error " + fmt("%.3g%%", *rep.policy.global.max_rel_error * 100)
                       : std::string());
    h += "</div><p class=\"legend\">Element-weighted over each layer's quantized tensors; red: a "
         "tensor of the "
         "layer failed. Hover a bar for details.</p>\n";
    const std::string hm = heatmap(rep, labels);
    if (!hm.empty()) {
      h += "<h2>Relative error by tensor kind and layer</h2><div class=\"chart\">" + hm;
      h += "</div><p class=\"legend\">Absolute colour scale: 0 (palest) to " +
           esc(fmt("%g%%", heat_scale_top(rep.policy) * 100)) +
           (rep.policy.global.max_rel_error ? " (the max_rel_error threshold)"
                                            : " (fixed; set --max-rel-error to anchor it)") +
           " relative error (darkest, and above); outlined: a tensor failed. Hover a cell for "
           "details.</p>\n";
    }
  }

  // Tensor table.
  if (!rep.tensors.empty()) {
    bool any_nonfinite = false;
    for (const auto& t : rep.tensors) any_nonfinite = any_nonfinite || t.sums.nonfinite > 0;
    h += "<h2>Tensors</h2><div class=\"tools\"><input id=\"filter\" type=\"search\" "
         "placeholder=\"Filter by name\"> <span class=\"legend\">Click a column header to "
         "sort.</span></div>"
         "<div class=\"scroll tall\" id=\"tensors-box\"><table id=\"tensors\" "
         "class=\"sortable\"><thead><tr>"
         "<th>#</th><th class=\"name\">tensor</th><th>dtype</th><th>shape</th><th>scheme</th>"
         "<th>elements</th><th>source</th><th>stored</th><th>ratio</th><th>rel err</th><th>SNR "
         "dB</th>"
         "<th>cosine</th><th>max abs</th><th>RMSE</th><th>mean abs</th>" +
         std::string(any_nonfinite ? "<th title=\"source NaN/Inf elements, excluded\">NaN/Inf</th>"
                                   : "") +
         "<th title=\"elements beyond the error bound (must be "
         "0)\">viol</th><th>status</th><th title=\"all-zero reconstruction, degenerate groups "
         "(stored scale 0), non-finite parameters\">flags</th></tr></thead><tbody>\n";
    for (size_t i = 0; i < rep.tensors.size(); ++i) {
      const TensorResult& t = rep.tensors[i];
      const bool m = t.quantized && t.compared;
      const std::string st = tensor_status_name(t.status);
      h += std::string("<tr") + (t.status != TensorStatus::Ok ? " class=\"failrow\"" : "") + ">";
      h += num_td(double(i), std::to_string(i));
      h += "<td class=\"name\" title=\"" + esc(t.name) + "\">" + esc_name(t.name) + "</td>";
      h += txt_td(dtype_name(t.dtype)) + txt_td(shape_to_string(t.shape));
      h += txt_td(!t.ggml_type.empty() ? t.ggml_type
                  : t.quantized        ? scheme_label(t.scheme)
                                       : kRawLabel);
      h += num_td(double(t.elements), std::to_string(t.elements));
      h += num_td(double(t.source_bytes), format_bytes(t.source_bytes));
      h += num_td(double(t.stored_bytes), format_bytes(t.stored_bytes));
      h += ratio_td(t.source_bytes, t.stored_bytes);
      if (m) {
        h += num_td(t.sums.rel_error(), sci(t.sums.rel_error()));
        h += num_td(t.sums.snr_db(), fixed(t.sums.snr_db(), 2));
        h += num_td(t.sums.cosine(), fixed(t.sums.cosine(), 6));
        h += "<td class=\"n\" data-v=\"" + key(t.sums.max_abs_err) + "\" title=\"at flat index " +
             std::to_string(t.sums.max_abs_index) + "\">" + esc(sci(t.sums.max_abs_err)) + "</td>";
        h += num_td(t.sums.rmse(), sci(t.sums.rmse()));
        h += num_td(t.sums.mean_abs_err(), sci(t.sums.mean_abs_err()));
        if (any_nonfinite) h += num_td(double(t.sums.nonfinite), std::to_string(t.sums.nonfinite));
        h += num_td(double(t.sums.bound_violations), std::to_string(t.sums.bound_violations),
                    t.sums.bound_violations ? "bad" : "");
      } else {
        // Raw tensors are exact (or mismatched): sort them as error 0.
        const std::string dash = t.quantized ? "-" : (t.raw_equal ? "exact" : "-");
        for (int c = 0; c < (any_nonfinite ? 8 : 7); ++c)
          h += "<td class=\"n\" data-v=\"" +
               std::string(c == 1   ? "Infinity"
                           : c == 2 ? "1"
                                    : "0") +
               "\">" + (c == 0 ? dash : "-") + "</td>";
      }
      h += "<td>" + status_badge(st) +
           (t.gate_ignored ? " <span class=\"legend\">gate ignored</span>" : "") + "</td>";
      const std::string flags = tensor_flags(t);
      h += flags.empty() ? std::string("<td></td>")
                         : "<td><span class=\"flag\">" + esc(flags) + "</span></td>";
      h += "</tr>\n";
    }
    h += "</tbody></table></div>\n";
  }

  // Importance-weighted and output errors (--imatrix, --activations).
  {
    std::string rows;
    for (const auto& t : rep.tensors) {
      if (!t.has_weighted && !t.has_output) continue;
      rows += "<tr><td class=\"name\" title=\"" + esc(t.name) + "\">" + esc_name(t.name) + "</td>";
      rows += num_td(t.sums.rel_error(), sci(t.sums.rel_error()));
      rows += t.has_weighted ? num_td(t.weighted.rel_error(), sci(t.weighted.rel_error()))
                             : std::string("<td class=\"n\" data-v=\"0\">-</td>");
      rows += t.has_output ? num_td(t.output.rel_error(), sci(t.output.rel_error()))
                           : std::string("<td class=\"n\" data-v=\"0\">-</td>");
      rows += t.has_output ? num_td(double(t.output.samples), std::to_string(t.output.samples))
                           : std::string("<td class=\"n\" data-v=\"0\">-</td>");
      rows += "</tr>\n";
    }
    if (!rows.empty())
      h += "<h2>Importance-weighted and output errors</h2><p class=\"legend\">" +
           esc((rep.imatrix.empty() ? std::string() : "imatrix " + rep.imatrix + "; ") +
               (rep.activations.empty() ? std::string() : "activations " + rep.activations + "; ") +
               "docs/quantization.md section 11") +
           "</p><div class=\"scroll\"><table class=\"sortable\"><thead><tr><th "
           "class=\"name\">tensor</th><th>rel err</th><th>imatrix-weighted</th><th>output "
           "err</th><th>samples</th></tr></thead><tbody>\n" +
           rows + "</tbody></table></div>\n";
  }

  // Layer and kind tables.
  auto rollup_table = [&](const std::vector<Rollup>& rows, const char* title, const char* first) {
    h += std::string("<h2>") + title +
         "</h2><div class=\"scroll\"><table class=\"sortable\"><thead><tr><th>" + first +
         "</th><th>tensors</th><th>quantized</th><th>elements</th><th>source</th><th>stored</th>"
         "<th>ratio</th><th>rel err</th><th>SNR dB</th><th>cosine</th><th>max abs</th><th>RMSE</th>"
         "<th>worst tensor</th></tr></thead><tbody>\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Rollup& r = rows[i];
      const bool m = r.quantized > 0 && rep.integrity_ok;
      h += "<tr>";
      if (r.layer_index >= 0 || std::string(first) == "layer")
        h += "<td data-v=\"" + std::to_string(i) + "\">" + esc(r.key) + "</td>";
      else
        h += txt_td(r.key);
      h += num_td(double(r.tensors), std::to_string(r.tensors));
      h += num_td(double(r.quantized), std::to_string(r.quantized));
      h += num_td(double(r.elements), std::to_string(r.elements));
      h += num_td(double(r.source_bytes), format_bytes(r.source_bytes));
      h += num_td(double(r.stored_bytes), format_bytes(r.stored_bytes));
      h += ratio_td(r.source_bytes, r.stored_bytes);
      h += m ? num_td(r.sums.rel_error(), sci(r.sums.rel_error()))
             : std::string("<td class=\"n\" data-v=\"0\">-</td>");
      h += m ? num_td(r.sums.snr_db(), fixed(r.sums.snr_db(), 2))
             : std::string("<td class=\"n\" data-v=\"Infinity\">-</td>");
      h += m ? num_td(r.sums.cosine(), fixed(r.sums.cosine(), 6))
             : std::string("<td class=\"n\" data-v=\"1\">-</td>");
      h += m ? num_td(r.sums.max_abs_err, sci(r.sums.max_abs_err))
             : std::string("<td class=\"n\" data-v=\"0\">-</td>");
      h += m ? num_td(r.sums.rmse(), sci(r.sums.rmse()))
             : std::string("<td class=\"n\" data-v=\"0\">-</td>");
      h += "<td class=\"name\">" + esc_name(r.worst_tensor) + "</td></tr>\n";
    }
    h += "</tbody></table></div>\n";
  };
  if (rep.integrity_ok) {
    rollup_table(rep.layers, "Layers", "layer");
    rollup_table(rep.kinds, "Tensor kinds", "kind");
  }

  // Settings.
  auto opt = [](const std::optional<double>& v) {
    return v ? fmt("%g", *v) : std::string("not set");
  };
  h += "<h2>Settings</h2><dl class=\"settings\">";
  auto dd = [&](const std::string& k, const std::string& v) {
    h += "<dt>" + esc(k) + "</dt><dd>" + esc(v) + "</dd>";
  };
  dd("file", rep.file + " (" + format_bytes(rep.file_bytes) + ", " +
                 (rep.file_format == "gguf" ? "GGUF v" : "format ") +
                 (rep.format_version.empty() ? std::string("?") : rep.format_version) + ")");
  dd("source", rep.source.empty() ? std::string("none (self-check)") : rep.source);
  dd("device", rep.device + " (requested: " + device_name(rep.device_requested) + ")");
  dd("threads", std::to_string(rep.threads));
  dd("max_rel_error", opt(rep.policy.global.max_rel_error));
  dd("min_snr_db", opt(rep.policy.global.min_snr_db));
  dd("min_cosine", opt(rep.policy.global.min_cosine));
  dd("max_abs_error", opt(rep.policy.global.max_abs_error));
  dd("policy file", rep.policy.source_file.empty() ? "none" : rep.policy.source_file);
  dd("integrity", !rep.integrity_ok ? std::string("FAILED")
                  : rep.file_format == "gguf"
                      ? count_of(rep.sections_checked, "tensor info") +
                            " valid, tensor data in bounds (GGUF has no checksums)"
                      : std::to_string(rep.sections_checked) + " sections, " +
                            format_bytes(rep.bytes_checked) + " checksummed (XXH3-64)");
  dd("qpack version", rep.qpack_version);
  dd("date (UTC)", rep.created_utc);
  dd("run time", fmt("%.2f s", rep.seconds));
  h += "</dl>";
  if (!rep.policy.rules.empty() || rep.policy.model.any())
    h += "<pre>" + esc(rep.policy.to_json().dump(2)) + "</pre>";
  if (!rep.provenance.is_null())
    h += "<h2>Provenance</h2><pre>" + esc(rep.provenance.dump(2)) + "</pre>";
  h += "<footer>Generated by qpack " + esc(rep.qpack_version) +
       " verify. Metrics are accumulated in double in a fixed order: identical for any thread "
       "count and on CPU "
       "and GPU. Relative error = ||x&minus;x&#770;||/||x||; SNR = "
       "10&middot;log10(||x||&sup2;/||x&minus;x&#770;||&sup2;).</footer>\n";
  h += "</main><script>" + std::string(kJs) + "</script></body></html>\n";
  return h;
}

}  // namespace qpack
