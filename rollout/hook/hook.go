// Package hook runs a rollout's rollback and cleanup actions: a command
// (argv, no shell) or a webhook, each attempt bounded by a timeout, retried
// with exponential backoff, and every attempt's outcome returned so the
// driver can record it.
package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Defaults applied by Run to zero fields of an Action.
const (
	DefaultTimeout = 30 * time.Second
	DefaultBackoff = time.Second
	// MaxBackoff caps the exponential growth of the wait between attempts.
	MaxBackoff = 30 * time.Second
	// MaxOutput bounds the output kept per attempt; the rest is counted, not kept.
	MaxOutput = 4096
)

// Action is one configured hook. Exactly one of Exec and Webhook is set.
type Action struct {
	Name string `json:"name"`
	// Exec is the command's argv. It is run directly, not through a shell;
	// write ["/bin/sh", "-c", "..."] to get one. The payload is on stdin as
	// JSON, and GUARDIAN_HOOK names the action.
	Exec []string `json:"exec,omitempty"`
	// Webhook receives the payload as a JSON POST; a 2xx answer is success.
	Webhook string `json:"webhook,omitempty"`
	// Timeout bounds each attempt (DefaultTimeout when zero).
	Timeout time.Duration `json:"timeout,omitempty"`
	// Retries is the number of attempts after the first one fails.
	Retries int `json:"retries,omitempty"`
	// Backoff is the wait before the first retry, doubled for each further
	// one up to MaxBackoff (DefaultBackoff when zero).
	Backoff time.Duration `json:"backoff,omitempty"`
	// Env is added to the command's environment. Its values are treated as
	// secrets: they are redacted from recorded output.
	Env map[string]string `json:"-"`
	// Headers are sent with a webhook request; their values are secrets too.
	Headers map[string]string `json:"-"`
	// Client sends webhook requests; nil means a client with no timeout of
	// its own (the attempt's Timeout bounds it).
	Client *http.Client `json:"-"`
}

// Outcome is what one attempt did.
type Outcome struct {
	Action     string `json:"action"`
	Attempt    int    `json:"attempt"` // 1-based
	OK         bool   `json:"ok"`
	ExitCode   int    `json:"exit_code,omitempty"`   // -1 when killed or not started
	HTTPStatus int    `json:"http_status,omitempty"` // 0 when no answer
	// Output is the command's combined stdout and stderr, or the webhook's
	// response body, truncated to MaxOutput with secrets redacted.
	Output   string        `json:"output,omitempty"`
	Err      string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// Validate reports an Action that Run cannot carry out.
func (a Action) Validate() error {
	switch {
	case a.Name == "":
		return errors.New("hook: name is empty")
	case len(a.Exec) > 0 && a.Webhook != "":
		return fmt.Errorf("hook %s: both exec and webhook are set; use one action for each", a.Name)
	case len(a.Exec) == 0 && a.Webhook == "":
		return fmt.Errorf("hook %s: neither exec nor webhook is set", a.Name)
	case len(a.Exec) > 0 && a.Exec[0] == "":
		return fmt.Errorf("hook %s: exec[0] is empty", a.Name)
	case a.Timeout < 0:
		return fmt.Errorf("hook %s: timeout %v is negative", a.Name, a.Timeout)
	case a.Backoff < 0:
		return fmt.Errorf("hook %s: backoff %v is negative", a.Name, a.Backoff)
	case a.Retries < 0:
		return fmt.Errorf("hook %s: retries %d is negative", a.Name, a.Retries)
	}
	if a.Webhook != "" {
		u, err := url.Parse(a.Webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("hook %s: webhook %q is not an http(s) URL", a.Name, redactURL(a.Webhook))
		}
	}
	return nil
}

// Run carries out the action, retrying failed attempts, and returns every
// attempt's outcome; the last one says whether the action succeeded. It
// returns early when ctx is done. An invalid action yields one failed
// outcome with the validation error.
func Run(ctx context.Context, a Action, payload any) []Outcome {
	if err := a.Validate(); err != nil {
		return []Outcome{{Action: a.Name, Attempt: 1, ExitCode: -1, Err: err.Error()}}
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return []Outcome{{Action: a.Name, Attempt: 1, ExitCode: -1, Err: "encode payload: " + err.Error()}}
	}
	if a.Timeout == 0 {
		a.Timeout = DefaultTimeout
	}
	if a.Backoff == 0 {
		a.Backoff = DefaultBackoff
	}
	r := newRedactor(a)
	var out []Outcome
	wait := a.Backoff
	for attempt := 1; attempt <= a.Retries+1; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return out
			case <-t.C:
			}
			wait = min(wait*2, MaxBackoff)
		}
		if ctx.Err() != nil {
			if len(out) == 0 {
				out = append(out, Outcome{Action: a.Name, Attempt: attempt, ExitCode: -1, Err: "not run: " + ctx.Err().Error()})
			}
			return out
		}
		var o Outcome
		if len(a.Exec) > 0 {
			o = runExec(ctx, a, body)
		} else {
			o = runWebhook(ctx, a, body)
		}
		o.Action, o.Attempt = a.Name, attempt
		o.Output, o.Err = r.redact(o.Output), r.redact(o.Err)
		out = append(out, o)
		if o.OK {
			return out
		}
	}
	return out
}

// Succeeded reports whether the last attempt in outcomes succeeded.
func Succeeded(outcomes []Outcome) bool {
	return len(outcomes) > 0 && outcomes[len(outcomes)-1].OK
}

func runExec(ctx context.Context, a Action, payload []byte) Outcome {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.Exec[0], a.Exec[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	out := &limitedBuffer{max: MaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	env := append(os.Environ(), "GUARDIAN_HOOK="+a.Name)
	for _, k := range sortedKeys(a.Env) {
		env = append(env, k+"="+a.Env[k])
	}
	cmd.Env = env
	killGroup(cmd)
	// A grandchild that keeps the output pipe open must not hold Run past
	// the timeout.
	cmd.WaitDelay = time.Second

	start := time.Now()
	err := cmd.Run()
	o := Outcome{Duration: time.Since(start), Output: out.String(), ExitCode: -1}
	if cmd.ProcessState != nil {
		o.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case err == nil:
		o.OK = true
	case ctx.Err() == context.DeadlineExceeded:
		o.Err = fmt.Sprintf("timed out after %v", a.Timeout)
	case ctx.Err() != nil:
		o.Err = "canceled: " + ctx.Err().Error()
	default:
		o.Err = err.Error()
	}
	return o
}

func runWebhook(ctx context.Context, a Action, payload []byte) Outcome {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	start := time.Now()
	o := Outcome{ExitCode: 0}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Webhook, bytes.NewReader(payload))
	if err != nil {
		o.Err = err.Error()
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "guardian-hook")
	req.Header.Set("X-Guardian-Hook", a.Name)
	for _, k := range sortedKeys(a.Headers) {
		req.Header.Set(k, a.Headers[k])
	}
	client := a.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		o.Duration = time.Since(start)
		if ctx.Err() == context.DeadlineExceeded {
			o.Err = fmt.Sprintf("timed out after %v", a.Timeout)
		} else {
			o.Err = redactURLsIn(err.Error())
		}
		return o
	}
	buf := &limitedBuffer{max: MaxOutput}
	_, rerr := io.Copy(buf, resp.Body)
	resp.Body.Close()
	o.Duration = time.Since(start)
	o.HTTPStatus = resp.StatusCode
	o.Output = buf.String()
	o.OK = resp.StatusCode >= 200 && resp.StatusCode < 300
	if !o.OK {
		o.Err = "HTTP " + resp.Status
	} else if rerr != nil && ctx.Err() == nil {
		// The answer was 2xx; a body cut short does not undo that.
		o.Output += "\n[reading body: " + rerr.Error() + "]"
	}
	return o
}

// limitedBuffer keeps the first max bytes written and counts the rest.
type limitedBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		n := min(room, len(p))
		b.buf.Write(p[:n])
		b.dropped += len(p) - n
	} else {
		b.dropped += len(p)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	s := strings.ToValidUTF8(b.buf.String(), "\uFFFD")
	if b.dropped > 0 {
		s += fmt.Sprintf("\n[truncated %d bytes]", b.dropped)
	}
	return s
}

// redactor removes secrets from recorded text: the action's env and header
// values, the webhook URL's password and query, and common credential forms.
type redactor struct{ secrets []string }

const redacted = "[REDACTED]"

// minSecretLen avoids redacting short values such as "1" or "on" everywhere.
const minSecretLen = 4

var credentialPattern = regexp.MustCompile(`(?i)((?:authorization|proxy-authorization)\s*[:=]\s*(?:bearer|basic|token)?\s*|(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)\s*[:=]\s*)("[^"]*"|[^\s"&,;]+)`)

func newRedactor(a Action) *redactor {
	r := &redactor{}
	for _, v := range a.Env {
		if len(v) >= minSecretLen {
			r.secrets = append(r.secrets, v)
		}
	}
	for _, v := range a.Headers {
		if len(v) >= minSecretLen {
			r.secrets = append(r.secrets, v)
		}
	}
	if u, err := url.Parse(a.Webhook); err == nil && a.Webhook != "" {
		if p, ok := u.User.Password(); ok && len(p) >= minSecretLen {
			r.secrets = append(r.secrets, p)
		}
		for _, vs := range u.Query() {
			for _, v := range vs {
				if len(v) >= minSecretLen {
					r.secrets = append(r.secrets, v)
				}
			}
		}
	}
	// Longest first, so a secret containing another is removed whole.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

func (r *redactor) redact(s string) string {
	if s == "" {
		return s
	}
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, redacted)
	}
	return credentialPattern.ReplaceAllString(s, "${1}"+redacted)
}

// redactURL hides the userinfo and query of a URL, which often carry tokens
// (Slack-style webhook paths are handled by the caller's secret list).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}

var urlPattern = regexp.MustCompile(`https?://[^\s"]+`)

func redactURLsIn(s string) string {
	return urlPattern.ReplaceAllStringFunc(s, func(m string) string {
		m = strings.TrimSuffix(m, `"`)
		return redactURL(m)
	})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
