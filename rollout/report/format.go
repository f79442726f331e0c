package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Status is a metric's health in the dashboard and notifications.
type Status string

const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	// StatusInconclusive marks a metric without enough data to judge; the
	// rollout waits on it rather than passing it.
	StatusInconclusive Status = "inconclusive"
)

// Symbol is the status as the seed's dashboard shows it.
func (s Status) Symbol() string {
	switch s {
	case StatusOK:
		return "✅"
	case StatusWarn:
		return "⚠️"
	case StatusFail:
		return "❌"
	case StatusInconclusive:
		return "❔"
	}
	return "·"
}

// FormatValue renders a metric value in its unit the way the seed's report
// does: "0.12%", "45ms", "$125", "2.1GB", "1200 req/s". NaN and infinities
// render as "n/a".
func FormatValue(v float64, unit string) string {
	n := formatNumber(v)
	if n == "n/a" {
		return n
	}
	switch unit {
	case "":
		return n
	case "$", "€", "£":
		if strings.HasPrefix(n, "-") {
			return "-" + unit + n[1:]
		}
		return unit + n
	case "%", "ms", "s", "µs", "us", "ns", "GB", "MB", "KB", "B", "x":
		return n + unit
	}
	return n + " " + unit
}

// formatNumber keeps about three significant figures without exponents for
// the magnitudes metrics take, and drops trailing zeros.
func formatNumber(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	a := math.Abs(v)
	var s string
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		s = strconv.FormatFloat(v, 'f', 1, 64)
		if a >= 1000 {
			s = strconv.FormatFloat(v, 'f', 0, 64)
		}
	case a >= 1:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.001:
		s = strconv.FormatFloat(v, 'f', 4, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// FormatChange renders a relative change in percent: "+10%", "-2.2%",
// "no change".
func FormatChange(pct float64) string {
	if math.IsNaN(pct) || math.IsInf(pct, 0) {
		return "n/a"
	}
	if math.Abs(pct) < 0.05 {
		return "no change"
	}
	s := strconv.FormatFloat(pct, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	if pct > 0 {
		s = "+" + s
	}
	return s + "%"
}

// FormatDuration renders a duration the way the seed's dashboard does:
// "12m 34s", "45m", "1h 5m", "8s".
func FormatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case h > 0 && m > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case h > 0:
		return fmt.Sprintf("%dh", h)
	case m > 0 && s > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	case m > 0:
		return fmt.Sprintf("%dm", m)
	}
	return fmt.Sprintf("%ds", s)
}

// displayWidth approximates the terminal columns a string takes: emoji and
// symbols that terminals draw double-width count two, variation selectors
// none. It keeps the dashboard's table columns aligned.
func displayWidth(s string) int {
	w := 0
	for _, r := range s {
		switch {
		case r == 0xFE0F || r == 0x200D || (r >= 0x300 && r < 0x370):
			// variation selector, zero-width joiner, combining marks
		case r >= 0x1F000, r >= 0x2600 && r <= 0x27BF, r >= 0x2300 && r <= 0x23FF, r >= 0x2B00 && r <= 0x2BFF,
			r >= 0x1100 && r <= 0x115F, r >= 0x2E80 && r <= 0xA4CF, r >= 0xAC00 && r <= 0xD7A3, r >= 0xF900 && r <= 0xFAFF, r >= 0xFF00 && r <= 0xFF60:
			w += 2
		default:
			w++
		}
	}
	return w
}

func pad(s string, width int) string {
	if n := width - displayWidth(s); n > 0 {
		return s + strings.Repeat(" ", n)
	}
	return s
}

// table renders a Markdown table with columns padded to equal width, so it
// reads in a terminal and in a Slack code block as well as in Markdown.
func table(b *strings.Builder, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = max(displayWidth(h), 3)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], displayWidth(c))
		}
	}
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" ")
			b.WriteString(pad(c, widths[i]))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for _, w := range widths {
		b.WriteString(strings.Repeat("-", w+2))
		b.WriteString("|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		line(r)
	}
}

// oneLine keeps user-supplied text from breaking the Markdown structure.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", "")
	return strings.TrimSpace(strings.ReplaceAll(s, "\n", " "))
}

// cell escapes a table cell's pipes.
func cell(s string) string { return strings.ReplaceAll(oneLine(s), "|", `\|`) }
