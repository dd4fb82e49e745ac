// Renderings of a VerifyReport: the terminal table, the JSON document
// (schema in docs/verify-report.md) and a self-contained HTML page.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

#include "qpack/verify/verify.hpp"

namespace qpack {

// The JSON report. Non-finite numbers (an exact tensor's SNR) are written as
// the strings "inf", "-inf" and "nan", since JSON has no such numbers.
nlohmann::json verify_report_json(const VerifyReport& report);

struct TableOptions {
  size_t top = 20;     // worst tensors listed; 0 = all
  bool color = false;  // ANSI colours for the verdict (terminals only)
};
std::string verify_report_table(const VerifyReport& report, const TableOptions& options = {});

// One HTML file with inline CSS, JS and SVG: works offline, no CDN.
std::string verify_report_html(const VerifyReport& report);

// "1.234e-02", "22.71", "inf": a metric as the table and the HTML show it.
std::string format_metric(double v, int precision, bool scientific);

}  // namespace qpack
