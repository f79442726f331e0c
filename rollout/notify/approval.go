package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Approval points, named as Flagger's webhook types.
const (
	ConfirmRollout         = "confirm-rollout"
	PreRollout             = "pre-rollout"
	ConfirmTrafficIncrease = "confirm-traffic-increase"
	ConfirmPromotion       = "confirm-promotion"
	PostRollout            = "post-rollout"
	Rollback               = "rollback"
)

var approvalTypes = []string{ConfirmRollout, PreRollout, ConfirmTrafficIncrease, ConfirmPromotion, PostRollout, Rollback}

// DefaultApprovalTimeout bounds an approval request when Timeout is zero.
const DefaultApprovalTimeout = 10 * time.Second

// maxReason bounds how much of a receiver's answer is kept as the reason.
const maxReason = 512

// Approval is a webhook asked before (or after) a point of the rollout.
type Approval struct {
	Type    string        `json:"type"`
	URL     string        `json:"url"`
	Timeout time.Duration `json:"timeout,omitempty"`
	// Secret signs the request body like notifications (X-Guardian-Signature).
	Secret []byte       `json:"-"`
	Client *http.Client `json:"-"` // nil: a default client
}

// Validate reports an Approval that cannot be asked.
func (a Approval) Validate() error {
	known := false
	for _, t := range approvalTypes {
		known = known || a.Type == t
	}
	if !known {
		return fmt.Errorf("approval: type %q is not one of %s", a.Type, strings.Join(approvalTypes, ", "))
	}
	u, err := url.Parse(a.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("approval %s: url %q is not an http(s) URL", a.Type, redactURL(a.URL))
	}
	if a.Timeout < 0 {
		return fmt.Errorf("approval %s: timeout %v is negative", a.Type, a.Timeout)
	}
	return nil
}

// ApprovalResult is the receiver's answer.
type ApprovalResult struct {
	Approved bool          `json:"approved"`
	Status   int           `json:"status"`
	Reason   string        `json:"reason,omitempty"` // the answer's body, trimmed
	Duration time.Duration `json:"duration_ns"`
}

// approvalBody is what the receiver gets.
type approvalBody struct {
	Type    string    `json:"type"`
	SentAt  time.Time `json:"sent_at"`
	Payload any       `json:"payload"`
}

// Ask posts payload to the approval webhook. A 2xx answer approves; any
// other answer denies, with the status and body as the reason. A request
// that gets no answer (refused, timed out) returns an error, and the caller
// applies its policy (hold or fail) to it as to a denial.
func Ask(ctx context.Context, a Approval, payload any) (ApprovalResult, error) {
	if err := a.Validate(); err != nil {
		return ApprovalResult{}, err
	}
	timeout := a.Timeout
	if timeout == 0 {
		timeout = DefaultApprovalTimeout
	}
	start := time.Now()
	body, err := json.Marshal(approvalBody{Type: a.Type, SentAt: start.UTC(), Payload: payload})
	if err != nil {
		return ApprovalResult{}, fmt.Errorf("approval %s: encode payload: %w", a.Type, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(body))
	if err != nil {
		return ApprovalResult{}, fmt.Errorf("approval %s: %w", a.Type, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "guardian-approval")
	req.Header.Set("X-Guardian-Approval", a.Type)
	if len(a.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(a.Secret, body))
	}
	client := a.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		res := ApprovalResult{Duration: time.Since(start)}
		if ctx.Err() == context.DeadlineExceeded {
			res.Reason = fmt.Sprintf("no answer within %v", timeout)
			return res, fmt.Errorf("approval %s: %s", a.Type, res.Reason)
		}
		res.Reason = strings.ReplaceAll(err.Error(), a.URL, redactURL(a.URL))
		return res, fmt.Errorf("approval %s: %s", a.Type, res.Reason)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxReason))
	res := ApprovalResult{
		Status:   resp.StatusCode,
		Approved: resp.StatusCode >= 200 && resp.StatusCode < 300,
		Reason:   strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD")),
		Duration: time.Since(start),
	}
	if !res.Approved {
		if res.Reason == "" {
			res.Reason = http.StatusText(resp.StatusCode)
		}
		res.Reason = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, res.Reason)
	}
	if rerr != nil && !errors.Is(rerr, io.EOF) && res.Reason == "" {
		res.Reason = "answer body unreadable: " + rerr.Error()
	}
	return res, nil
}
