package smoke

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

type jsonTest struct {
	Name            string  `json:"name"`
	Kind            string  `json:"kind"`
	Passed          bool    `json:"passed"`
	Attempts        int     `json:"attempts"`
	DurationSeconds float64 `json:"durationSeconds"`
	LatencySeconds  float64 `json:"latencySeconds"`
	Reason          string  `json:"reason,omitempty"`
}

type jsonResult struct {
	Suite           string     `json:"suite"`
	Passed          bool       `json:"passed"`
	Started         time.Time  `json:"started"`
	DurationSeconds float64    `json:"durationSeconds"`
	Total           int        `json:"total"`
	Failed          int        `json:"failed"`
	Tests           []jsonTest `json:"tests"`
}

// JSON returns the result as an indented JSON document; durations are in
// seconds.
func (r Result) JSON() ([]byte, error) {
	out := jsonResult{
		Suite: r.Suite, Passed: r.Passed, Started: r.Started.UTC(),
		DurationSeconds: r.Duration.Seconds(), Total: len(r.Tests), Failed: len(r.Failed()),
		Tests: make([]jsonTest, len(r.Tests)),
	}
	for i, t := range r.Tests {
		out.Tests[i] = jsonTest{
			Name: t.Name, Kind: t.Kind, Passed: t.Passed, Attempts: t.Attempts,
			DurationSeconds: t.Duration.Seconds(), LatencySeconds: t.Latency.Seconds(), Reason: t.Reason,
		}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// JUnit XML, the shape Jenkins, GitLab, GitHub Actions reporters and
// CircleCI read: testsuites > testsuite > testcase > failure.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Errors    int         `xml:"errors,attr"`
	Time      string      `xml:"time,attr"`
	Timestamp string      `xml:"timestamp,attr"`
	Cases     []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// JUnit returns the result as JUnit XML so CI systems list each test.
func (r Result) JUnit() ([]byte, error) {
	name := r.Suite
	if name == "" {
		name = "smoke"
	}
	s := junitSuite{
		Name: name, Tests: len(r.Tests), Failures: len(r.Failed()), Time: seconds(r.Duration),
		Timestamp: r.Started.UTC().Format("2006-01-02T15:04:05"),
	}
	for _, t := range r.Tests {
		c := junitCase{Name: t.Name, Classname: name + "." + t.Kind, Time: seconds(t.Duration)}
		if !t.Passed {
			c.Failure = &junitFailure{
				Message: t.Reason, Type: "SmokeTestFailure",
				Text: fmt.Sprintf("%s\nattempts: %d\nlatency: %s", t.Reason, t.Attempts, t.Latency.Round(time.Microsecond)),
			}
		}
		s.Cases = append(s.Cases, c)
	}
	doc := junitSuites{Name: name, Tests: s.Tests, Failures: s.Failures, Time: s.Time, Suites: []junitSuite{s}}
	b, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), append(b, '\n')...), nil
}

// WriteTable writes the result as an aligned terminal table with a summary
// line.
func (r Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tTEST\tKIND\tATTEMPTS\tLATENCY\tREASON")
	for _, t := range r.Tests {
		status := "PASS"
		if !t.Passed {
			status = "FAIL"
		}
		reason := strings.ReplaceAll(t.Reason, "\n", " ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", status, t.Name, t.Kind, t.Attempts, t.Latency.Round(time.Millisecond/10), reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	_, err := fmt.Fprintf(w, "\n%s: %d/%d tests passed in %s\n", verdict, len(r.Tests)-len(r.Failed()), len(r.Tests), r.Duration.Round(time.Millisecond))
	return err
}

// Summary is a one-line account for events and reports: "5/5 smoke tests
// passed" or "1 of 5 smoke tests failed: GET /orders/{id} (status 500, want
// 200)".
func (r Result) Summary() string {
	failed := r.Failed()
	if len(failed) == 0 {
		return fmt.Sprintf("%d/%d smoke tests passed", len(r.Tests), len(r.Tests))
	}
	parts := make([]string, len(failed))
	for i, t := range failed {
		parts[i] = fmt.Sprintf("%s (%s)", t.Name, t.Reason)
	}
	return fmt.Sprintf("%d of %d smoke tests failed: %s", len(failed), len(r.Tests), strings.Join(parts, "; "))
}
