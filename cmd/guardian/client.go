package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/driver"
	"github.com/deployment-guardian/guardian/rollout/report"
	"github.com/deployment-guardian/guardian/rollout/store"
)

func init() {
	register(func(root *cobra.Command) {
		root.AddCommand(newStatusCmd(), newWaitCmd(), newReportCmd(), newHistoryCmd())
		for _, c := range commandCmds() {
			root.AddCommand(c)
		}
	})
}

// Exit codes of `guardian wait` (the architecture note's contract).
const (
	exitRolledBack = 3
	exitTimeout    = 4
)

// clientOpts are the flags every client command shares.
type clientOpts struct {
	admin string
	token string
}

func (o *clientOpts) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.admin, "admin", "http://127.0.0.1:9090", "admin API URL of the guardian run process")
	// The environment is read at use, not as the flag's default, so --help
	// never prints the secret.
	f.StringVar(&o.token, "token", "", "bearer token for the admin API (default $GUARDIAN_TOKEN)")
}

// apiClient talks to one admin API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func (o *clientOpts) client() (*apiClient, error) {
	base := strings.TrimRight(o.admin, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usageErr("--admin %q: want a URL such as http://127.0.0.1:9090", o.admin)
	}
	token := o.token
	if token == "" {
		token = os.Getenv("GUARDIAN_TOKEN")
	}
	return &apiClient{base: base, token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// apiError is an answer the admin API refused, or no answer at all.
type apiError struct {
	status      int // 0 when the API could not be reached
	msg         string
	unreachable bool
}

func (e *apiError) Error() string { return e.msg }

// do sends one request; out, when set, receives the JSON answer. Failures
// are one readable line: the API's own {"error": ...}, or what stood in the
// way of reaching it.
func (c *apiClient) do(ctx context.Context, method, path string, body any, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		why := err.Error()
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			why = op.Err.Error()
		}
		return nil, &apiError{unreachable: true, msg: fmt.Sprintf("cannot reach the admin API at %s (%s); is `guardian run` running there? (--admin)", c.base, why)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, &apiError{unreachable: true, msg: fmt.Sprintf("admin API at %s: reading the answer: %v", c.base, err)}
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			msg = fmt.Sprintf("the admin API at %s refused the token (HTTP %d): set --token or GUARDIAN_TOKEN", c.base, resp.StatusCode)
		default:
			if msg == "" {
				msg = resp.Status
			}
		}
		return raw, &apiError{status: resp.StatusCode, msg: msg}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, &apiError{status: resp.StatusCode, msg: fmt.Sprintf("admin API at %s: unexpected answer to %s %s: %v", c.base, method, path, err)}
		}
	}
	return raw, nil
}

// failed wraps an API failure as exit code 1 with the command's context.
func apiFailed(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return &exitError{code: 1, err: fmt.Errorf("%s: interrupted", what)}
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: 1, err: fmt.Errorf("%s: %w", what, err)}
}

func rolloutPath(name string, rest ...string) string {
	p := "/api/v1/rollouts/" + url.PathEscape(name)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// interruptible is ctx cancelled on Ctrl-C / SIGTERM, for the commands that
// poll.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func checkOutputFlag(o string, allowed ...string) error {
	for _, a := range allowed {
		if o == a {
			return nil
		}
	}
	return usageErr("-o %q: want %s", o, strings.Join(allowed, " or "))
}

// clientTTY reports whether w is a terminal: colours and redraws only there.
func clientTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ---- status ----

type statusOpts struct {
	clientOpts
	output   string
	watch    bool
	interval time.Duration
}

func newStatusCmd() *cobra.Command {
	var o statusOpts
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show a rollout's dashboard (or list rollouts)",
		Long: `Show the rollout's Deployment Status Dashboard: the current stage, how long
it has been there, the target, the health metrics baseline vs canary with
the judge's verdict (✅ pass, ⚠️ not yet conclusive, ❌ fail, ❔ no data)
and the decision with its reason. -o json prints the admin API's status
document. --watch redraws every --interval until the rollout ends (or
Ctrl-C). Without NAME, lists the rollouts.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputFlag(o.output, "text", "json"); err != nil {
				return err
			}
			if o.interval <= 0 {
				return usageErr("--interval %s: must be positive", o.interval)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible(cmd.Context())
			defer cancel()
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				return listRollouts(ctx, c, out, o.output)
			}
			return showStatus(ctx, c, out, args[0], o)
		},
	}
	o.bind(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	f.BoolVarP(&o.watch, "watch", "w", false, "redraw until the rollout ends")
	f.DurationVar(&o.interval, "interval", time.Second, "refresh interval for --watch")
	return cmd
}

func listRollouts(ctx context.Context, c *apiClient, out io.Writer, format string) error {
	var list []driver.Status
	raw, err := c.do(ctx, http.MethodGet, "/api/v1/rollouts", nil, &list)
	if err != nil {
		return apiFailed("status", err)
	}
	if format == "json" {
		_, err := out.Write(indentedJSON(raw))
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(out, "no rollouts")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPHASE\tSTEP\tWEIGHTS\tMESSAGE")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Phase, stepOf(s), report.FormatWeights(s.Weights), clipLine(s.Message, 80))
	}
	return tw.Flush()
}

func stepOf(s driver.Status) string {
	if s.Steps == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", min(s.Step+1, s.Steps), s.Steps)
}

func clipLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func indentedJSON(raw []byte) []byte {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		return raw
	}
	b.WriteByte('\n')
	return b.Bytes()
}

func showStatus(ctx context.Context, c *apiClient, out io.Writer, name string, o statusOpts) error {
	tty := clientTTY(out)
	path := rolloutPath(name)
	if o.output != "json" {
		path += "?events=0" // the dashboard does not show them
	}
	for first := true; ; first = false {
		var s driver.Status
		raw, err := c.do(ctx, http.MethodGet, path, nil, &s)
		if err != nil {
			if o.watch && !first && ctx.Err() == nil {
				// The process may be restarting: say so and keep watching.
				var ae *apiError
				if errors.As(err, &ae) && ae.unreachable {
					fmt.Fprintf(out, "(%s; retrying)\n", ae.msg)
					if sleepOrDone(ctx, o.interval) != nil {
						return nil
					}
					continue
				}
			}
			if o.watch && errors.Is(err, context.Canceled) {
				return nil
			}
			return apiFailed("status "+name, err)
		}
		switch {
		case o.output == "json":
			if _, err := out.Write(indentedJSON(raw)); err != nil {
				return err
			}
		default:
			d := driver.Dashboard(s)
			d.Color = tty
			text := report.Dashboard(d)
			if o.watch && tty {
				// Home and clear, then draw: one frame per refresh.
				text = "\x1b[H\x1b[2J" + text + fmt.Sprintf("\n(refreshing every %s; Ctrl-C to stop)\n", o.interval)
			} else if o.watch && !first {
				text = "\n" + text
			}
			if _, err := io.WriteString(out, text); err != nil {
				return err
			}
		}
		if !o.watch || s.Phase.Done() {
			return nil
		}
		if sleepOrDone(ctx, o.interval) != nil {
			return nil // Ctrl-C ends a watch normally
		}
	}
}

func sleepOrDone(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ---- promote, abort, pause, resume, set-weight, jump ----

func commandCmds() []*cobra.Command {
	type spec struct {
		use, short string
		kind       rollout.CommandKind
		args       int
		flags      func(cmd *cobra.Command, b *commandBody)
		parse      func(args []string, b *commandBody) error
	}
	specs := []spec{
		{use: "promote NAME", short: "Complete the current step now (or, with --full, go straight to 100%)", kind: rollout.CmdPromote, args: 1,
			flags: func(cmd *cobra.Command, b *commandBody) {
				cmd.Flags().BoolVar(&b.Full, "full", false, "skip every remaining step and gate: canary to 100%")
			}},
		{use: "abort NAME", short: "Roll the rollout back now: canary weight 0, rollback hooks run", kind: rollout.CmdAbort, args: 1,
			flags: func(cmd *cobra.Command, b *commandBody) {
				cmd.Flags().StringVar(&b.Reason, "reason", "", "why, for the history and the report")
			}},
		{use: "pause NAME", short: "Hold the rollout at its current weights until resume", kind: rollout.CmdPause, args: 1},
		{use: "resume NAME", short: "Continue a paused rollout", kind: rollout.CmdResume, args: 1},
		{use: "set-weight NAME N", short: "Set the canary's weight to N% by hand (the rollout pauses there)", kind: rollout.CmdSetWeight, args: 2,
			parse: func(args []string, b *commandBody) error {
				n, err := strconv.Atoi(args[1])
				if err != nil || n < 0 || n > 100 {
					return usageErr("set-weight: weight %q is not a whole number between 0 and 100", args[1])
				}
				b.Weight = &n
				return nil
			}},
		{use: "jump NAME STEP", short: "Move the rollout to step STEP (1-based, as status shows it)", kind: rollout.CmdJump, args: 2,
			parse: func(args []string, b *commandBody) error {
				n, err := strconv.Atoi(args[1])
				if err != nil || n < 1 {
					return usageErr("jump: step %q is not a step number (1, 2, ...)", args[1])
				}
				n-- // the API counts from 0 like the engine
				b.Step = &n
				return nil
			}},
	}
	var cmds []*cobra.Command
	for _, sp := range specs {
		var o clientOpts
		var body commandBody
		var output string
		cmd := &cobra.Command{
			Use:   sp.use,
			Short: sp.short,
			Args:  cobra.ExactArgs(sp.args),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := checkOutputFlag(output, "text", "json"); err != nil {
					return err
				}
				b := body
				if sp.parse != nil {
					if err := sp.parse(args, &b); err != nil {
						return err
					}
				}
				b.By = "cli"
				if u := os.Getenv("USER"); u != "" {
					b.By = "cli:" + u
				}
				c, err := o.client()
				if err != nil {
					return err
				}
				name := args[0]
				if b.Step != nil {
					// STEP counts from 1 as status shows it; the API from 0.
					var cur driver.Status
					if _, err := c.do(cmd.Context(), http.MethodGet, rolloutPath(name)+"?events=0", nil, &cur); err != nil {
						return apiFailed(fmt.Sprintf("%s %s", sp.kind, name), err)
					}
					if *b.Step >= cur.Steps {
						return &exitError{code: 1, err: fmt.Errorf("jump %s: step %d is not between 1 and %d", name, *b.Step+1, cur.Steps)}
					}
				}
				var s driver.Status
				raw, err := c.do(cmd.Context(), http.MethodPost, rolloutPath(name, string(sp.kind)), b, &s)
				if err != nil {
					return apiFailed(fmt.Sprintf("%s %s", sp.kind, name), err)
				}
				if output == "json" {
					_, err := cmd.OutOrStdout().Write(indentedJSON(raw))
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s done; phase %s, step %s, %s\n", name, sp.kind, s.Phase, stepOf(s), report.FormatWeights(s.Weights))
				if s.Message != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", clipLine(s.Message, 200))
				}
				return nil
			},
		}
		if sp.flags != nil {
			sp.flags(cmd, &body)
		}
		o.bind(cmd)
		cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json (the rollout's status after the command)")
		cmds = append(cmds, cmd)
	}
	return cmds
}

// commandBody is the admin API's command body (driver.Manager's contract).
type commandBody struct {
	Full   bool   `json:"full,omitempty"`
	Weight *int   `json:"weight,omitempty"`
	Step   *int   `json:"step,omitempty"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// ---- wait ----

func newWaitCmd() *cobra.Command {
	var o clientOpts
	var timeout, interval time.Duration
	cmd := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until a rollout ends: exit 0 promoted, 3 rolled back or aborted, 4 timeout",
		Long: `Poll the rollout until it ends. Exit codes: 0 Promoted, 3 RolledBack or
Aborted, 4 --timeout reached first, 1 the API refused (unknown rollout) or
could not be reached at the start. Once connected, a restarting guardian
run (the API unreachable for a while) is waited out.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return usageErr("--interval %s: must be positive", interval)
			}
			if timeout < 0 {
				return usageErr("--timeout %s: must not be negative", timeout)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible(cmd.Context())
			defer cancel()
			return waitFor(ctx, c, cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], timeout, interval)
		},
	}
	o.bind(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (exit 4); 0 waits forever")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "poll interval")
	return cmd
}

func waitFor(ctx context.Context, c *apiClient, out, errw io.Writer, name string, timeout, interval time.Duration) error {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	connected, warned := false, false
	var last driver.Status
	for {
		var s driver.Status
		_, err := c.do(ctx, http.MethodGet, rolloutPath(name)+"?events=0", nil, &s)
		var ae *apiError
		switch {
		case err == nil:
			connected, warned = true, false
			last = s
			if s.Phase.Done() {
				fmt.Fprintf(out, "%s: %s", name, s.Phase)
				if s.Message != "" {
					fmt.Fprintf(out, ": %s", s.Message)
				}
				fmt.Fprintln(out)
				if s.Phase == rollout.Promoted {
					return nil
				}
				return &exitError{code: exitRolledBack, err: fmt.Errorf("%s was %s", name, strings.ToLower(splitCamel(string(s.Phase))))}
			}
		case connected && errors.As(err, &ae) && ae.unreachable:
			if !warned {
				fmt.Fprintf(errw, "guardian: %s; still waiting\n", ae.msg)
				warned = true
			}
		default:
			return apiFailed("wait "+name, err)
		}
		select {
		case <-ctx.Done():
			return apiFailed("wait "+name, ctx.Err())
		case <-deadline:
			where := "not reached"
			if connected {
				where = fmt.Sprintf("still %s at step %s, %s", last.Phase, stepOf(last), report.FormatWeights(last.Weights))
			}
			return &exitError{code: exitTimeout, err: fmt.Errorf("wait %s: timed out after %s (%s)", name, timeout, where)}
		case <-time.After(interval):
		}
	}
}

// splitCamel turns "RolledBack" into "Rolled Back".
func splitCamel(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ---- report ----

func newReportCmd() *cobra.Command {
	var o clientOpts
	var output string
	cmd := &cobra.Command{
		Use:   "report NAME",
		Short: "Print the deployment report (live or final) as Markdown or JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "md" {
				output = "markdown"
			}
			if err := checkOutputFlag(output, "markdown", "json"); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			raw, err := c.do(cmd.Context(), http.MethodGet, rolloutPath(args[0], "report")+"?format="+output, nil, nil)
			if err != nil {
				return apiFailed("report "+args[0], err)
			}
			if output == "json" {
				raw = indentedJSON(raw)
			}
			_, err = cmd.OutOrStdout().Write(raw)
			return err
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "markdown", "output format: markdown or json")
	return cmd
}

// ---- history ----

func newHistoryCmd() *cobra.Command {
	var o clientOpts
	var output string
	var after uint64
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "Print the rollout's event log: every decision, in order",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputFlag(output, "text", "json"); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			var evs []store.StoredEvent
			raw, err := c.do(cmd.Context(), http.MethodGet, rolloutPath(args[0], "events")+"?after="+strconv.FormatUint(after, 10), nil, &evs)
			if err != nil {
				return apiFailed("history "+args[0], err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				_, err := out.Write(indentedJSON(raw))
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tMESSAGE")
			for _, e := range evs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Type, strings.Join(strings.Fields(e.Message), " "))
			}
			return tw.Flush()
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().Uint64Var(&after, "after", 0, "only events after this sequence number")
	return cmd
}
