// Package deploy holds Guardian's deployment files: Kubernetes manifests,
// a systemd unit, Prometheus scrape config and alerts, a Grafana dashboard.
// Its test keeps them true to the binary: every flag they pass is one
// `guardian run` accepts, the rollout spec they ship validates, the
// Deployment's probes, token and ports work against a real `guardian run`,
// and every metric and label the dashboard and alerts query exists.
package deploy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// ---------------------------------------------------------------- helpers

// requireTool returns the path of an external tool. A missing tool skips
// the test, except in CI (CI=true), where it fails: CI installs them.
func requireTool(t *testing.T, name string, inCI bool) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI && os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true requires it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// TestMain removes the binary built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// guardian builds cmd/guardian once per test run. The tests exec it rather
// than import it, so they check the binary operators run.
func guardian(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "guardian-deploy-test-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "guardian")
		cmd := exec.Command("go", "build", "-o", buildBin, "../cmd/guardian")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ../cmd/guardian: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

var (
	runFlagsOnce sync.Once
	runFlags     map[string]bool
	runFlagsErr  error
)

// acceptedRunFlags lists the long flags `guardian run --help` prints, each
// with whether it takes a value.
func acceptedRunFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := guardian(t)
	runFlagsOnce.Do(func() {
		out, err := exec.Command(bin, "run", "--help").CombinedOutput()
		if err != nil {
			runFlagsErr = fmt.Errorf("guardian run --help: %v\n%s", err, out)
			return
		}
		// "--name type   help" takes a value; "--name   help" is a boolean.
		runFlags = map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)( \w+)?\s{2,}`).FindAllStringSubmatch(string(out), -1) {
			runFlags[m[1]] = m[2] != ""
		}
		if _, ok := runFlags["state-dir"]; !ok || !runFlags["admin"] {
			runFlagsErr = fmt.Errorf("guardian run --help lists no --state-dir/--admin; parsed %v from:\n%s", runFlags, out)
		}
	})
	if runFlagsErr != nil {
		t.Fatal(runFlagsErr)
	}
	return runFlags
}

// flagValues splits `guardian run` arguments into flags (name to value)
// and positional arguments, checking each flag against --help.
func flagValues(t *testing.T, where string, args []string) (map[string]string, []string) {
	t.Helper()
	accepted := acceptedRunFlags(t)
	flags := map[string]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		takesValue, ok := accepted[name]
		if !ok {
			t.Errorf("%s: flag --%s is not accepted by `guardian run` (it accepts %v)", where, name, sortedKeys(accepted))
		}
		if !hasVal && takesValue && i+1 < len(args) {
			i++
			val = args[i]
		}
		flags[name] = val
	}
	return flags, pos
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer collects a child's stderr while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the deadline passes. It waits on
// another process, so polling is the only option.
func waitFor(deadline time.Duration, cond func() bool) bool {
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return cond()
}

func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ------------------------------------------------------ Kubernetes files

type manifest struct {
	file string
	line int
	doc  map[string]any
}

func (m manifest) kind() string { s, _ := m.doc["kind"].(string); return s }
func (m manifest) name() string { return str(m.doc, "metadata", "name") }
func (m manifest) String() string {
	return fmt.Sprintf("%s:%d (%s %s)", m.file, m.line, m.kind(), m.name())
}

// get walks maps by key and slices by index ("0").
func get(v any, path ...string) any {
	for _, p := range path {
		switch c := v.(type) {
		case map[string]any:
			v = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any, path ...string) string { s, _ := get(v, path...).(string); return s }
func list(v any, path ...string) []any { l, _ := get(v, path...).([]any); return l }

func readManifests(t *testing.T, file string) []manifest {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []manifest
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var doc map[string]any
		if err := n.Decode(&doc); err != nil {
			t.Fatalf("%s:%d: %v", file, n.Line, err)
		}
		if doc == nil {
			continue
		}
		out = append(out, manifest{file: file, line: n.Line, doc: doc})
	}
	return out
}

// kube reads every manifest in deploy/kubernetes, by file.
func kube(t *testing.T) map[string][]manifest {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	out := map[string][]manifest{}
	for _, f := range files {
		out[filepath.Base(f)] = readManifests(t, f)
	}
	return out
}

func one(t *testing.T, all map[string][]manifest, kind, name string) manifest {
	t.Helper()
	var found []manifest
	for _, ms := range all {
		for _, m := range ms {
			if m.kind() == kind && (name == "" || m.name() == name) {
				found = append(found, m)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in kubernetes/, got %d: %v", kind, name, len(found), found)
	}
	return found[0]
}

func TestKubernetesManifestsParse(t *testing.T) {
	all := kube(t)
	for file, ms := range all {
		t.Run(file, func(t *testing.T) {
			if len(ms) == 0 {
				t.Fatal("no documents")
			}
			for _, m := range ms {
				if m.kind() == "Kustomization" {
					continue
				}
				if str(m.doc, "apiVersion") == "" || m.kind() == "" || m.name() == "" {
					t.Errorf("%v: apiVersion, kind and metadata.name are required", m)
				}
				if m.kind() != "Namespace" && str(m.doc, "metadata", "namespace") != "guardian" {
					t.Errorf("%v: metadata.namespace = %q, want guardian", m, str(m.doc, "metadata", "namespace"))
				}
				if str(m.doc, "metadata", "labels", "app.kubernetes.io/name") != "guardian" {
					t.Errorf("%v: label app.kubernetes.io/name=guardian is missing", m)
				}
			}
		})
	}
}

func TestKustomization(t *testing.T) {
	all := kube(t)
	k := one(t, all, "Kustomization", "")
	var listed []string
	for _, r := range list(k.doc, "resources") {
		s, _ := r.(string)
		listed = append(listed, s)
		if _, ok := all[s]; !ok {
			t.Errorf("kustomization.yaml lists %s, which is not in kubernetes/", s)
		}
	}
	// Left out on purpose: a Secret template, a CRD that needs the Operator
	// and a budget that blocks drains. Everything else must be applied.
	optional := map[string]bool{"kustomization.yaml": true, "secret.yaml": true, "servicemonitor.yaml": true, "pdb.yaml": true}
	for file := range all {
		if !optional[file] && !slices.Contains(listed, file) {
			t.Errorf("kustomization.yaml does not list %s", file)
		}
		if optional[file] && slices.Contains(listed, file) {
			t.Errorf("kustomization.yaml lists the optional %s", file)
		}
	}
	for _, want := range []string{"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"} {
		found := false
		for _, f := range listed {
			for _, m := range all[f] {
				found = found || m.kind() == want
			}
		}
		if !found {
			t.Errorf("kustomization.yaml applies no %s", want)
		}
	}

	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl is not installed: the kustomize build is not checked")
		return
	}
	out, err := exec.Command(kubectl, "kustomize", "kubernetes").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize kubernetes: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("image: ghcr.io/deployment-guardian/guardian:")) {
		t.Errorf("kustomize output has no guardian image:\n%s", out)
	}
}

func TestSecretTemplateHoldsNoSecret(t *testing.T) {
	s := one(t, kube(t), "Secret", "guardian-admin-token")
	data, _ := get(s.doc, "stringData").(map[string]any)
	if len(data) == 0 || get(s.doc, "data") != nil {
		t.Fatalf("%v: want stringData.token only, got %v", s, s.doc)
	}
	for k, v := range data {
		if v != "" {
			t.Errorf("%v: stringData.%s must stay empty in the template, got %q", s, k, v)
		}
	}
}

// deployment returns the Deployment and its one container.
func deployment(t *testing.T, all map[string][]manifest) (manifest, map[string]any) {
	t.Helper()
	d := one(t, all, "Deployment", "guardian")
	cs := list(d.doc, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("%v: want one container, got %d", d, len(cs))
	}
	return d, cs[0].(map[string]any)
}

func containerPort(c map[string]any, name string) int {
	for _, p := range list(c, "ports") {
		if str(p, "name") == name {
			n, _ := get(p, "containerPort").(int)
			return n
		}
	}
	return 0
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func TestDeployment(t *testing.T) {
	all := kube(t)
	d, c := deployment(t, all)
	spec := get(d.doc, "spec")
	pod := get(spec, "template", "spec")

	if r := get(spec, "replicas"); r != 1 {
		t.Errorf("%v: replicas = %v, want 1 (one process holds the state file)", d, r)
	}
	if s := str(spec, "strategy", "type"); s != "Recreate" {
		t.Errorf("%v: strategy.type = %q, want Recreate (the new pod needs the old one's file lock)", d, s)
	}
	sel, _ := get(spec, "selector", "matchLabels").(map[string]any)
	labels, _ := get(spec, "template", "metadata", "labels").(map[string]any)
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("%v: selector %s=%v does not match the pod labels %v", d, k, v, labels)
		}
	}

	// Security: non-root, read-only, no capabilities, no privilege escalation.
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%v: pod securityContext.runAsNonRoot must be true", d)
	}
	if str(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("%v: pod seccompProfile must be RuntimeDefault", d)
	}
	if get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Errorf("%v: readOnlyRootFilesystem must be true", d)
	}
	if get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("%v: allowPrivilegeEscalation must be false", d)
	}
	if drop := list(c, "securityContext", "capabilities", "drop"); len(drop) != 1 || drop[0] != "ALL" {
		t.Errorf("%v: capabilities.drop = %v, want [ALL]", d, drop)
	}
	if list(c, "securityContext", "capabilities", "add") != nil {
		t.Errorf("%v: no capability may be added", d)
	}
	for _, r := range []string{"requests.cpu", "requests.memory", "limits.memory"} {
		a, b, _ := strings.Cut(r, ".")
		if get(c, "resources", a, b) == nil {
			t.Errorf("%v: resources.%s is not set", d, r)
		}
	}

	// Arguments: only flags `guardian run` accepts, files from the mounts.
	args := toStrings(list(c, "args"))
	if len(args) < 2 || args[0] != "run" {
		t.Fatalf("%v: args = %v, want run FILE... [flags]", d, args)
	}
	flags, files := flagValues(t, d.String()+" args", args[1:])
	if len(files) == 0 {
		t.Errorf("%v: args name no spec file", d)
	}
	mounts := map[string]map[string]any{}
	for _, m := range list(c, "volumeMounts") {
		mounts[str(m, "mountPath")] = m.(map[string]any)
	}
	volumes := map[string]map[string]any{}
	for _, v := range list(pod, "volumes") {
		volumes[str(v, "name")] = v.(map[string]any)
	}
	for _, f := range files {
		m := mounts[filepath.Dir(f)]
		if m == nil || volumes[str(m, "name")]["configMap"] == nil {
			t.Errorf("%v: spec file %s is not in a ConfigMap mount", d, f)
			continue
		}
		cm := one(t, all, "ConfigMap", str(volumes[str(m, "name")], "configMap", "name"))
		if str(cm.doc, "data", filepath.Base(f)) == "" {
			t.Errorf("%v: %s: ConfigMap %s has no key %s", d, f, cm.name(), filepath.Base(f))
		}
	}
	stateMount := mounts[flags["state-dir"]]
	if stateMount == nil {
		t.Errorf("%v: --state-dir=%s is not a volume mount", d, flags["state-dir"])
	} else if claim := str(volumes[str(stateMount, "name")], "persistentVolumeClaim", "claimName"); claim == "" {
		t.Errorf("%v: --state-dir is not on a PersistentVolumeClaim", d)
	} else {
		pvc := one(t, all, "PersistentVolumeClaim", claim)
		if m := list(pvc.doc, "spec", "accessModes"); len(m) != 1 || m[0] != "ReadWriteOnce" {
			t.Errorf("%v: accessModes = %v, want [ReadWriteOnce]", pvc, m)
		}
	}
	if get(stateMount, "readOnly") == true {
		t.Errorf("%v: the state mount is read-only", d)
	}

	// The admin API leaves loopback only with the token from the Secret, and
	// never through the arguments (they show in ps and the pod spec).
	if _, ok := flags["token"]; ok {
		t.Errorf("%v: pass the token in GUARDIAN_TOKEN, not --token", d)
	}
	admin := flags["admin"]
	host, _, _ := net.SplitHostPort(admin)
	tokenFromSecret := false
	for _, e := range list(c, "env") {
		if str(e, "name") == "GUARDIAN_TOKEN" {
			tokenFromSecret = str(e, "valueFrom", "secretKeyRef", "name") == "guardian-admin-token" &&
				str(e, "valueFrom", "secretKeyRef", "key") == "token" && get(e, "valueFrom", "secretKeyRef", "optional") != true
		}
	}
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && !tokenFromSecret {
		t.Errorf("%v: --admin=%s is not loopback, so GUARDIAN_TOKEN must come from Secret guardian-admin-token key token (not optional)", d, admin)
	}

	// Ports and probes agree with the flags.
	if p := containerPort(c, "admin"); p == 0 || p != portOf(t, admin) {
		t.Errorf("%v: container port admin = %d, --admin = %s", d, p, admin)
	}
	if p := containerPort(c, "xds"); p == 0 || p != portOf(t, flags["xds-listen"]) {
		t.Errorf("%v: container port xds = %d, --xds-listen = %s", d, p, flags["xds-listen"])
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/readyz"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%v: %s path = %q, want %s", d, probe, got, path)
		}
		if port := get(c, probe, "httpGet", "port"); port != "admin" {
			t.Errorf("%v: %s port = %v, want admin", d, probe, port)
		}
	}

	// Kubernetes must not kill a drain: the grace period covers the preStop
	// pause plus --drain.
	drain := 30 * time.Second
	if v, ok := flags["drain"]; ok {
		var err error
		if drain, err = time.ParseDuration(v); err != nil {
			t.Fatalf("%v: --drain=%s: %v", d, v, err)
		}
	}
	pause, _ := get(c, "lifecycle", "preStop", "sleep", "seconds").(int)
	grace, _ := get(pod, "terminationGracePeriodSeconds").(int)
	if time.Duration(grace)*time.Second <= drain+time.Duration(pause)*time.Second {
		t.Errorf("%v: terminationGracePeriodSeconds %d must exceed preStop %ds + --drain %v", d, grace, pause, drain)
	}

	// Every Service selects this pod and targets a port it has; each of the
	// proxy, admin and xDS ports has a Service.
	targeted := map[string]bool{}
	for _, m := range all["service.yaml"] {
		if m.kind() != "Service" {
			continue
		}
		ssel, _ := get(m.doc, "spec", "selector").(map[string]any)
		if len(ssel) == 0 {
			t.Errorf("%v: no selector", m)
		}
		for k, v := range ssel {
			if labels[k] != v {
				t.Errorf("%v: selector %s=%v does not match the pod labels", m, k, v)
			}
		}
		for _, p := range list(m.doc, "spec", "ports") {
			tp := str(p, "targetPort")
			if containerPort(c, tp) == 0 {
				t.Errorf("%v: targetPort %v is not a named container port", m, get(p, "targetPort"))
			}
			targeted[tp] = true
		}
	}
	for _, p := range []string{"http", "admin", "xds"} {
		if !targeted[p] {
			t.Errorf("no Service targets container port %s", p)
		}
	}

	// The proxy port is where the shipped rollout listens.
	specs := configMapSpecs(t, all)
	for file, text := range specs {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatalf("ConfigMap key %s: %v", file, err)
		}
		if l := str(doc, "spec", "listen"); portOf(t, l) != containerPort(c, "http") {
			t.Errorf("ConfigMap key %s: spec.listen %s is not container port http (%d)", file, l, containerPort(c, "http"))
		}
	}

	// The NetworkPolicy selects this pod and names only its ports, all of
	// them.
	np := one(t, all, "NetworkPolicy", "guardian")
	npSel, _ := get(np.doc, "spec", "podSelector", "matchLabels").(map[string]any)
	for k, v := range npSel {
		if labels[k] != v {
			t.Errorf("%v: podSelector %s=%v does not match the pod labels", np, k, v)
		}
	}
	covered := map[string]bool{}
	for _, rule := range list(np.doc, "spec", "ingress") {
		for _, p := range list(rule, "ports") {
			name := fmt.Sprint(get(p, "port"))
			if containerPort(c, name) == 0 {
				t.Errorf("%v: port %s is not a named container port", np, name)
			}
			covered[name] = true
		}
	}
	for _, p := range list(c, "ports") {
		if !covered[str(p, "name")] {
			t.Errorf("%v: container port %s is not reachable through any ingress rule", np, str(p, "name"))
		}
	}

	// Optional extras point at the same objects.
	if sm := all["servicemonitor.yaml"]; len(sm) == 1 {
		ep := get(sm[0].doc, "spec", "endpoints", "0")
		if str(ep, "port") != "admin" || str(ep, "authorization", "credentials", "name") != "guardian-admin-token" {
			t.Errorf("%v: must scrape port admin with the guardian-admin-token Secret", sm[0])
		}
	}
	if pdb := all["pdb.yaml"]; len(pdb) == 1 {
		psel, _ := get(pdb[0].doc, "spec", "selector", "matchLabels").(map[string]any)
		for k, v := range psel {
			if labels[k] != v {
				t.Errorf("%v: selector %s=%v does not match the pod labels", pdb[0], k, v)
			}
		}
	}
}

func toStrings(l []any) []string {
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = fmt.Sprint(v)
	}
	return out
}

// configMapSpecs returns the rollout files the Deployment mounts, by name.
func configMapSpecs(t *testing.T, all map[string][]manifest) map[string]string {
	t.Helper()
	cm := one(t, all, "ConfigMap", "guardian-rollouts")
	data, _ := get(cm.doc, "data").(map[string]any)
	out := map[string]string{}
	for k, v := range data {
		out[k], _ = v.(string)
	}
	if len(out) == 0 {
		t.Fatalf("%v: no data", cm)
	}
	return out
}

func TestConfigMapSpecValidates(t *testing.T) {
	bin := guardian(t)
	dir := t.TempDir()
	var files []string
	for name, text := range configMapSpecs(t, kube(t)) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	out, err := exec.Command(bin, append([]string{"validate"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("guardian validate on the ConfigMap's spec: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "checkout") {
		t.Errorf("guardian validate lists no rollout checkout:\n%s", out)
	}
}

// ----------------------------------------------- a real run, on loopback

// loopbackSpec rewrites a shipped rollout file so it runs here: every
// rollout listens on a free loopback port and sends stable and canary to
// the given backends. It returns the file and the listen addresses.
func loopbackSpec(t *testing.T, text, stable, canary string) (string, []string) {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(text))
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	var listens []string
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		spec := mapValue(mapValue(&n, "spec"))
		if spec == nil {
			t.Fatalf("line %d: a rollout document without spec", n.Line)
		}
		addr := "127.0.0.1:" + freePort(t)
		setScalar(t, spec, "listen", addr)
		listens = append(listens, addr)
		setScalar(t, mapValue(spec, "stable"), "url", stable)
		setScalar(t, mapValue(spec, "canary"), "url", canary)
		if err := enc.Encode(&n); err != nil {
			t.Fatal(err)
		}
	}
	enc.Close()
	return out.String(), listens
}

// mapValue returns the value under key in a mapping (or a document's root
// mapping when key is "").
func mapValue(n *yaml.Node, key ...string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if len(key) == 0 {
		return n
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key[0] {
			return n.Content[i+1]
		}
	}
	return nil
}

func setScalar(t *testing.T, m *yaml.Node, key, val string) {
	t.Helper()
	v := mapValue(m, key)
	if v == nil || v.Kind != yaml.ScalarNode {
		t.Fatalf("the shipped spec has no scalar %s to point at loopback", key)
	}
	v.Value = val
	v.Style = 0
}

// scrape is what one live run of the shipped Deployment exposed.
type scrape struct {
	types  map[string]string          // family -> counter, gauge, histogram, ...
	labels map[string]map[string]bool // series name -> label names
	text   string
	// prom holds, when Prometheus is installed, what a real Prometheus
	// scraping this run with prometheus/prometheus.yml answered to each
	// dashboard query (after grafanaVars).
	prom map[string]promResult
}

type promResult struct {
	series int
	err    string
}

func parseExposition(text string) scrape {
	s := scrape{types: map[string]string{}, labels: map[string]map[string]bool{}, text: text}
	series := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			s.types[f[2]] = f[3]
			continue
		}
		m := series.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if s.labels[m[1]] == nil {
			s.labels[m[1]] = map[string]bool{}
		}
		for _, l := range label.FindAllStringSubmatch(m[2], -1) {
			s.labels[m[1]][l[1]] = true
		}
	}
	return s
}

var (
	liveOnce sync.Once
	liveRes  scrape
	liveErr  string
)

// liveDeployment runs the Deployment's container as Kubernetes would,
// moved to loopback: its args (addresses and paths rewritten), its env
// (the token from a generated Secret, GOMEMLIMIT from the memory limit),
// the ConfigMap's spec against real backends. It checks the probes, the
// token, traffic, SIGHUP and SIGTERM, and returns the scrape of /metrics.
// It runs once; the first test to need it reports the details of a
// failure, later ones only that it failed.
func liveDeployment(t *testing.T) scrape {
	t.Helper()
	bin := guardian(t)
	liveOnce.Do(func() {
		liveErr = "the live run stopped early: see the first test that ran it"
		failedBefore := t.Failed()
		liveRes = runDeployment(t, bin)
		if t.Failed() && !failedBefore {
			liveErr = "the live run reported errors: see the first test that ran it"
		} else {
			liveErr = ""
		}
	})
	if liveErr != "" {
		t.Fatalf("live run of the Deployment: %s", liveErr)
	}
	return liveRes
}

func runDeployment(t *testing.T, bin string) scrape {
	all := kube(t)
	d, c := deployment(t, all)
	pod := get(d.doc, "spec", "template", "spec")
	dir := t.TempDir()

	var hits [2]int
	var mu sync.Mutex
	backend := func(i int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[i]++
			mu.Unlock()
			io.WriteString(w, "ok")
		}))
		t.Cleanup(s.Close)
		return s
	}
	stable, canary := backend(0), backend(1)

	// The ConfigMap, mounted where the Deployment mounts it.
	mountDir := map[string]string{}
	var listens []string
	for _, m := range list(c, "volumeMounts") {
		var vol map[string]any
		for _, v := range list(pod, "volumes") {
			if str(v, "name") == str(m, "name") {
				vol = v.(map[string]any)
			}
		}
		local := filepath.Join(dir, strings.ReplaceAll(strings.Trim(str(m, "mountPath"), "/"), "/", "_"))
		if err := os.MkdirAll(local, 0o700); err != nil {
			t.Fatalf("%v", err)
		}
		mountDir[str(m, "mountPath")] = local
		if name := str(vol, "configMap", "name"); name != "" {
			cm := one(t, all, "ConfigMap", name)
			data, _ := get(cm.doc, "data").(map[string]any)
			for k, v := range data {
				text, ls := loopbackSpec(t, v.(string), stable.URL, canary.URL)
				listens = append(listens, ls...)
				if err := os.WriteFile(filepath.Join(local, k), []byte(text), 0o600); err != nil {
					t.Fatalf("%v", err)
				}
			}
		}
	}
	if len(listens) == 0 {
		t.Fatalf("the ConfigMap holds no rollout with spec.listen")
	}

	// Arguments: paths into the mounts, addresses onto loopback.
	args := toStrings(list(c, "args"))
	adminAddr := ""
	// Longest mount first, and one rewrite per argument: /etc/guardian/x
	// must not be rewritten again by a /tmp mount once it points into the
	// test's temporary directory.
	mps := sortedKeys(mountDir)
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for i, a := range args {
		for _, mp := range mps {
			local := mountDir[mp]
			if a == mp || strings.HasPrefix(a, mp+"/") {
				a = local + strings.TrimPrefix(a, mp)
				break
			}
			if name, v, ok := strings.Cut(a, "="); ok && (v == mp || strings.HasPrefix(v, mp+"/")) {
				a = name + "=" + local + strings.TrimPrefix(v, mp)
				break
			}
		}
		if name, v, ok := strings.Cut(a, "="); ok && (name == "--admin" || name == "--xds-listen") && v != "" {
			v = "127.0.0.1:" + freePort(t)
			if name == "--admin" {
				adminAddr = v
			}
			a = name + "=" + v
		}
		args[i] = a
	}
	if adminAddr == "" {
		t.Fatalf("the Deployment's args set no --admin=ADDR: %v", args)
	}

	// Env: the Secret's token, the memory limit as Kubernetes renders it.
	token := randomToken(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	for _, e := range list(c, "env") {
		name := str(e, "name")
		switch {
		case get(e, "value") != nil:
			env = append(env, name+"="+str(e, "value"))
		case str(e, "valueFrom", "secretKeyRef", "name") == "guardian-admin-token":
			env = append(env, name+"="+token)
		case str(e, "valueFrom", "resourceFieldRef", "resource") != "":
			res := str(e, "valueFrom", "resourceFieldRef", "resource")
			a, b, _ := strings.Cut(res, ".")
			q := str(c, "resources", a, b)
			n, err := quantityBytes(q)
			if err != nil {
				t.Fatalf("env %s: resources.%s %q: %v", name, res, q, err)
			}
			env = append(env, name+"="+strconv.FormatInt(n, 10))
		default:
			t.Fatalf("env %s: a source this test does not know how to supply", name)
		}
	}

	var stderr syncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start guardian %v: %v", args, err)
	}
	exited := make(chan error, 1)
	var gone atomic.Bool
	go func() { err := cmd.Wait(); gone.Store(true); exited <- err }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	base := "http://" + adminAddr
	probe := func(kind string) string { return base + str(c, kind, "httpGet", "path") }
	if !waitFor(20*time.Second, func() bool {
		code, _ := httpGet(t, probe("readinessProbe"), "")
		return code == 200 || gone.Load()
	}) || gone.Load() {
		t.Fatalf("readinessProbe %s never answered 200; guardian said:\n%s", probe("readinessProbe"), stderr.String())
	}
	for _, p := range []string{"livenessProbe", "startupProbe"} {
		// The kubelet sends no token.
		if code, body := httpGet(t, probe(p), ""); code != 200 {
			t.Errorf("%s %s: %d %s", p, probe(p), code, body)
		}
	}
	if code, body := httpGet(t, base+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d %s, want 401", code, body)
	}
	if code, body := httpGet(t, base+"/api/v1/rollouts", "wrong-"+token); code != http.StatusUnauthorized {
		t.Errorf("/api/v1/rollouts with a wrong token: %d %s, want 401", code, body)
	}
	if code, body := httpGet(t, base+"/api/v1/rollouts/checkout", token); code != 200 || !strings.Contains(body, `"checkout"`) {
		t.Errorf("/api/v1/rollouts/checkout with the token: %d %s", code, body)
	}

	// Traffic through the proxy port the Service targets.
	const n = 50
	for i := range n {
		code, body := httpGet(t, "http://"+listens[0]+"/item/"+strconv.Itoa(i), "")
		if code != 200 || body != "ok" {
			t.Fatalf("request %d through the proxy: %d %q", i, code, body)
		}
	}
	mu.Lock()
	served := hits[0] + hits[1]
	mu.Unlock()
	if served != n {
		t.Errorf("backends served %d requests, want %d", served, n)
	}

	code, text := httpGet(t, base+"/metrics", token)
	if code != 200 {
		t.Fatalf("/metrics with the token: %d %s", code, text)
	}
	res := parseExposition(text)
	for fam, typ := range map[string]string{
		"guardian_requests_total":           "counter",
		"guardian_request_duration_seconds": "histogram",
		"guardian_version_weight":           "gauge",
		"guardian_rollout_phase":            "gauge",
		"guardian_rollout_step":             "gauge",
		"guardian_rollout_weight_percent":   "gauge",
	} {
		if res.types[fam] != typ {
			t.Errorf("/metrics: %s has type %q, want %s", fam, res.types[fam], typ)
		}
	}
	if !regexp.MustCompile(`(?m)^guardian_requests_total\{[^}]*route="checkout"[^}]*\} (\d+)`).MatchString(text) {
		t.Errorf("/metrics counts no request of route checkout:\n%s", grepLines(text, "guardian_requests_total"))
	}
	if flags, _ := flagValues(t, "Deployment args", args[1:]); flags["xds-listen"] != "" {
		for fam, typ := range map[string]string{
			"guardian_xds_convergence_seconds":       "histogram",
			"guardian_xds_connected_nodes":           "gauge",
			"guardian_xds_snapshots_published_total": "counter",
		} {
			if res.types[fam] != typ {
				t.Errorf("/metrics with --xds-listen: %s has type %q, want %s", fam, res.types[fam], typ)
			}
		}
	}
	res.prom = prometheusAgainst(t, adminAddr, token, "http://"+listens[0]+"/")

	// ExecReload / a rollout of the ConfigMap: SIGHUP re-reads the files.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(stderr.String(), "reloaded") }) {
		t.Errorf("SIGHUP: guardian did not log a reload:\n%s", stderr.String())
	}

	// SIGTERM, as the kubelet sends after preStop: a clean exit well within
	// the grace period.
	grace, _ := get(pod, "terminationGracePeriodSeconds").(int)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("guardian exited with %v after SIGTERM:\n%s", err, stderr.String())
		}
	case <-time.After(time.Duration(grace) * time.Second):
		t.Errorf("guardian did not exit within terminationGracePeriodSeconds (%ds) of SIGTERM", grace)
	}
	return res
}

// prometheusAgainst starts a real Prometheus with prometheus/prometheus.yml
// and guardian-rules.yml, pointed at the running Guardian (address, token
// file, a 1s interval instead of 15s), drives traffic through the proxy
// until rates show, and runs every dashboard query. It returns nil when
// Prometheus is not installed (outside CI).
func prometheusAgainst(t *testing.T, admin, token, proxyURL string) map[string]promResult {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus is not installed (CI=true requires it)")
		}
		t.Log("prometheus is not installed: the dashboard's queries are not run against real data")
		return nil
	}
	dir := t.TempDir()
	cfg, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatalf("%v", err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	text := string(cfg)
	for _, r := range []struct{ re, to string }{
		{`(?m)^(\s*(?:scrape|evaluation)_interval:\s*)\S+$`, "${1}1s"},
		{`(?m)^(\s*credentials_file:\s*)\S+$`, "${1}" + tokenFile},
		{`"127\.0\.0\.1:9090"`, `"` + admin + `"`},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(text) {
			t.Fatalf("prometheus/prometheus.yml: nothing matches %s to point it at the test's Guardian", r.re)
		}
		text = re.ReplaceAllString(text, r.to)
	}
	rules, err := os.ReadFile("prometheus/guardian-rules.yml")
	if err != nil {
		t.Fatalf("%v", err)
	}
	for name, b := range map[string][]byte{"prometheus.yml": []byte(text), "guardian-rules.yml": rules} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatalf("%v", err)
		}
	}
	web := "127.0.0.1:" + freePort(t)
	started := time.Now()
	var out syncBuffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()

	query := func(q string) (int, string) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return 0, err.Error()
		}
		if r.Status != "success" {
			return 0, r.Error
		}
		return len(r.Data.Result), ""
	}

	// Bounded traffic while Prometheus scrapes: at most 40 requests a
	// second for the 30 s the wait below allows.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &http.Client{Timeout: 2 * time.Second}
		for i := 0; i < 1200; i++ {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			if resp, err := c.Get(proxyURL + strconv.Itoa(i)); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// up == 1 proves the shipped scrape config authenticates; a rate over
	// the dashboard's window proves two scrapes with traffic between them.
	if !waitFor(30*time.Second, func() bool {
		n, _ := query(`up{job="guardian"} == 1`)
		m, _ := query(grafanaVars.Replace(`sum(rate(guardian_requests_total[$__rate_interval])) > 0`))
		return n == 1 && m == 1
	}) {
		n, e := query(`up{job="guardian"}`)
		t.Fatalf("Prometheus with prometheus/prometheus.yml never scraped Guardian with traffic (up: %d %s)\n%s", n, e, out.String())
	}

	t.Logf("Prometheus saw traffic after %v", time.Since(started).Round(time.Millisecond))
	res := map[string]promResult{}
	for _, e := range dashboardExprs(t) {
		q := grafanaVars.Replace(e)
		n, err := query(q)
		res[e] = promResult{series: n, err: err}
	}

	// The alert rules evaluate without error against real series.
	if !waitFor(10*time.Second, func() bool { return rulesEvaluated(web) == "" }) {
		t.Errorf("guardian-rules.yml in a real Prometheus: %s", rulesEvaluated(web))
	}
	t.Logf("Prometheus done after %v", time.Since(started).Round(time.Millisecond))
	return res
}

// rulesEvaluated returns "" once every rule was evaluated without error.
func rulesEvaluated(web string) string {
	resp, err := http.Get("http://" + web + "/api/v1/rules")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err.Error()
	}
	n := 0
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			n++
			if rule.Health != "ok" {
				return fmt.Sprintf("rule %s: health %q %s", rule.Name, rule.Health, rule.LastError)
			}
		}
	}
	if n == 0 {
		return "no rules loaded"
	}
	return ""
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// quantityBytes reads a Kubernetes memory quantity such as 512Mi.
func quantityBytes(q string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(q, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			return n * u.mult, err
		}
	}
	return strconv.ParseInt(q, 10, 64)
}

func TestDeploymentRunsOnLoopback(t *testing.T) {
	liveDeployment(t)
}

// ------------------------------------------------------ metric inventory

type metricInfo struct {
	histogram bool
	labels    map[string]bool // nil: unknown
	where     string
}

var (
	codeOnce    sync.Once
	codeMetrics map[string]*metricInfo
	codeErr     error
)

// metricsInCode finds every metric Guardian's Go code defines, by reading
// the source: NewDesc("guardian_...", help, labels) and
// Opts{Namespace: "guardian", Subsystem: S, Name: N} with the label list
// that follows. Tests are not read.
func metricsInCode(t *testing.T) map[string]*metricInfo {
	t.Helper()
	codeOnce.Do(func() {
		codeMetrics = map[string]*metricInfo{}
		desc := regexp.MustCompile(`NewDesc\(\s*"(guardian_[a-z0-9_]+)",\s*"(?:[^"\\]|\\.)*",\s*\[\]string\{([^}]*)\}`)
		opts := regexp.MustCompile(`(\w+)Opts\{\s*Namespace:\s*"guardian",\s*Subsystem:\s*"([a-z0-9_]+)",\s*Name:\s*"([a-z0-9_]+)"`)
		labelList := regexp.MustCompile(`\[\]string\{([^}]*)\}`)
		codeErr = filepath.WalkDir("..", func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && (strings.HasPrefix(e.Name(), ".") && path != ".." || e.Name() == "testdata" || e.Name() == "vendor") {
				return filepath.SkipDir
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src := string(b)
			if !strings.Contains(src, "guardian") {
				return nil
			}
			for _, m := range desc.FindAllStringSubmatch(src, -1) {
				codeMetrics[m[1]] = &metricInfo{labels: parseLabelList(m[2]), where: path}
			}
			locs := opts.FindAllStringSubmatchIndex(src, -1)
			for i, l := range locs {
				kind, sub, name := src[l[2]:l[3]], src[l[4]:l[5]], src[l[6]:l[7]]
				end := len(src)
				if i+1 < len(locs) {
					end = locs[i+1][0]
				}
				// A Vec's label names follow its Opts, before the next metric.
				info := &metricInfo{histogram: kind == "Histogram", labels: map[string]bool{}, where: path}
				rest := src[l[1]:end]
				if ll := labelList.FindStringSubmatchIndex(rest); ll != nil && strings.Contains(src[max(0, l[0]-40):l[0]], "Vec(") {
					info.labels = parseLabelList(rest[ll[2]:ll[3]])
				}
				codeMetrics["guardian_"+sub+"_"+name] = info
			}
			return nil
		})
	})
	if codeErr != nil {
		t.Fatal(codeErr)
	}
	if len(codeMetrics) < 10 {
		t.Fatalf("found only %d metrics in the code (%v): the scan is broken", len(codeMetrics), sortedKeys(codeMetrics))
	}
	return codeMetrics
}

func parseLabelList(s string) map[string]bool {
	out := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.Trim(strings.TrimSpace(f), `"`); f != "" {
			out[f] = true
		}
	}
	return out
}

func TestMetricInventory(t *testing.T) {
	// The scan must see what the brief promises, with the right labels; if
	// a metric is renamed, this fails here first.
	code := metricsInCode(t)
	for name, labels := range map[string][]string{
		"guardian_requests_total":           {"route", "version", "code"},
		"guardian_request_duration_seconds": {"route", "version"},
		"guardian_request_errors_total":     {"route", "version", "kind"},
		"guardian_version_weight":           {"route", "version"},
		"guardian_guard_trips_total":        {"route", "trigger"},
		"guardian_rollout_phase":            {"rollout", "phase"},
		"guardian_rollout_step":             {"rollout"},
		"guardian_rollout_weight_percent":   {"rollout", "version"},
		"guardian_rollout_decisions_total":  {"rollout", "decision"},
		"guardian_rollout_rollback_seconds": {"rollout"},
		"guardian_xds_convergence_seconds":  nil,
		"guardian_xds_nacks_total":          {"type"},
	} {
		m := code[name]
		if m == nil {
			t.Errorf("%s is not defined in the code", name)
			continue
		}
		if got := sortedKeys(m.labels); !slices.Equal(got, sorted(labels)) {
			t.Errorf("%s (%s): labels %v, want %v", name, m.where, got, sorted(labels))
		}
	}
	for _, h := range []string{"guardian_rollout_rollback_seconds", "guardian_xds_convergence_seconds"} {
		if m := code[h]; m != nil && !m.histogram {
			t.Errorf("%s is not a histogram in the code", h)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	if s == nil {
		s = []string{}
	}
	sort.Strings(s)
	return s
}

// promql finds the metrics, label matchers and grouping labels of a query.
var (
	metricRef  = regexp.MustCompile(`\b(guardian_[a-z0-9_]+)\b(\s*\{[^}]*\})?`)
	matcherRef = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	groupRef   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	templRef   = regexp.MustCompile(`\{\{\s*\.?\$?(?:labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true}

// checkQuery reports metrics and labels in expr that Guardian does not
// export. Labels come from the live scrape where the metric appeared
// there, else from the code. legend is a Grafana legend or "".
func checkQuery(t *testing.T, where, expr, legend string, live scrape) {
	t.Helper()
	code := metricsInCode(t)
	available := map[string]bool{"le": false}
	for k := range targetLabels {
		available[k] = true
	}
	refs := metricRef.FindAllStringSubmatch(expr, -1)
	if len(refs) == 0 && !strings.Contains(expr, "up{") {
		t.Errorf("%s: %q queries no guardian metric", where, expr)
	}
	for _, m := range refs {
		name, base, suffix := m[1], m[1], ""
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, s); ok && code[name] == nil && live.types[name] == "" {
				base, suffix = b, s
			}
		}
		info := code[base]
		if info == nil {
			t.Errorf("%s: %s is not a metric Guardian defines (query %q)", where, name, expr)
			continue
		}
		if suffix != "" && !info.histogram && live.types[base] != "histogram" {
			t.Errorf("%s: %s: %s is not a histogram", where, name, base)
			continue
		}
		labels := info.labels
		if l, ok := live.labels[name]; ok {
			labels = l
		}
		for l := range labels {
			available[l] = true
		}
		if suffix == "_bucket" {
			available["le"] = true
		}
		for _, mm := range matcherRef.FindAllStringSubmatch(m[2], -1) {
			if !labels[mm[1]] && !targetLabels[mm[1]] {
				t.Errorf("%s: %s has no label %s (it has %v)", where, name, mm[1], sortedKeys(labels))
			}
		}
	}
	for _, g := range groupRef.FindAllStringSubmatch(expr, -1) {
		for l := range parseLabelList(g[1]) {
			if !available[l] {
				t.Errorf("%s: groups by %s, which no metric in %q has", where, l, expr)
			}
		}
	}
	for _, l := range templRef.FindAllStringSubmatch(legend, -1) {
		if !available[l[1]] {
			t.Errorf("%s: legend %q uses %s, which no metric in %q has", where, legend, l[1], expr)
		}
	}
}

// ------------------------------------------------------------- Grafana

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string         `json:"name"`
			Datasource map[string]any `json:"datasource"`
			Expr       string         `json:"expr"`
			TextFormat string         `json:"textFormat"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int `json:"id"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	Targets    []struct {
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
		Datasource   map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/guardian-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/guardian-dashboard.json: %v", err)
	}
	return d
}

// dashboardExprs lists every PromQL expression of the dashboard: panel
// targets and annotations.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	d := readDashboard(t)
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, q := range p.Targets {
				out = append(out, q.Expr)
			}
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out = append(out, a.Expr)
		}
	}
	return out
}

// grafanaVars replaces Grafana's variables with values PromQL accepts, so
// queries can be checked by promtool and run against a Prometheus that
// scrapes every second.
var grafanaVars = strings.NewReplacer("$__rate_interval", "10s", "$__interval", "5s", "$__range", "1m",
	"$route", ".*", "$rollout", ".*")

// mustShowData are the panels that show data as soon as Guardian serves
// traffic; the others wait for errors, trips, rollbacks or xDS clients.
var mustShowData = map[string]bool{
	"Request rate per version": true, "Error rate per version": true, "Latency p50 per version": true, "Latency p99 per version": true,
	"Responses by status class": true, "Canary weight over time": true, "Rollout phase": true, "Current step": true,
	"xDS fleet": true,
}

func TestGrafanaDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want >= 36", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" {
			q, _ := json.Marshal(v.Query)
			checkLabelValues(t, "variable "+v.Name, string(q))
		}
	}
	if vars["datasource"] != "datasource" || vars["rollout"] != "query" || vars["route"] != "query" {
		t.Errorf("variables %v: want a datasource variable named datasource and query variables rollout and route", vars)
	}

	live := liveDeployment(t)
	var exprs []string
	titles := map[string]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			titles[p.Title] = true
			if uid, _ := p.Datasource["uid"].(string); uid != "${datasource}" {
				t.Errorf("panel %q: datasource %v, want uid ${datasource}", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for i, q := range p.Targets {
				where := fmt.Sprintf("panel %q target %d", p.Title, i)
				if uid, _ := q.Datasource["uid"].(string); uid != "${datasource}" {
					t.Errorf("%s: datasource %v, want uid ${datasource}", where, q.Datasource)
				}
				checkQuery(t, where, q.Expr, q.LegendFormat, live)
				exprs = append(exprs, q.Expr)
				if live.prom == nil {
					continue
				}
				r := live.prom[q.Expr]
				t.Logf("%s: %d series from Prometheus", where, r.series)
				if r.err != "" {
					t.Errorf("%s: Prometheus refused %q: %s", where, grafanaVars.Replace(q.Expr), r.err)
				}
				if mustShowData[p.Title] && r.series == 0 {
					t.Errorf("%s: no data while Guardian serves traffic: %q", where, grafanaVars.Replace(q.Expr))
				}
			}
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			checkQuery(t, "annotation "+a.Name, a.Expr, a.TextFormat, live)
			exprs = append(exprs, a.Expr)
		}
	}
	// Layout: unique ids, inside the 24-column grid, no overlaps.
	ids := map[int]bool{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		g := p.GridPos
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d is zero or not unique", p.Title, p.ID)
		}
		ids[p.ID] = true
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Errorf("panel %q overlaps panel %q at (%d,%d)", p.Title, other, x, y)
					x, y = g.X+g.W, g.Y+g.H
					continue
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
	}
	for _, want := range []string{"Request rate per version", "Error rate per version", "Latency p50 per version",
		"Latency p99 per version", "Canary weight over time", "Rollout phase", "Guard trips",
		"Time to rollback (p99 in range)", "xDS convergence (publish to last ACK)", "xDS NACKs"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	for _, e := range exprs {
		if strings.Contains(e, "guardian_request_duration_seconds") && strings.Contains(e, "histogram_quantile") &&
			!strings.Contains(e, "guardian_request_duration_seconds_bucket") {
			t.Errorf("%q: histogram_quantile needs the _bucket series", e)
		}
	}

	// PromQL syntax: promtool parses each query as a recording rule.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (CI=true requires it)")
		}
		t.Log("promtool is not installed: query syntax is not checked")
		return
	}
	var rules bytes.Buffer
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(grafanaVars.Replace(e))
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(f, rules.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard's queries: %v\n%s\n%s", err, out, rules.String())
	}
}

// checkLabelValues checks label_values(metric, label) in a variable query.
func checkLabelValues(t *testing.T, where, q string) {
	t.Helper()
	m := regexp.MustCompile(`label_values\((guardian_[a-z0-9_]+),\s*([a-z_]+)\)`).FindStringSubmatch(q)
	if m == nil {
		t.Errorf("%s: %s is not label_values(guardian_..., label)", where, q)
		return
	}
	info := metricsInCode(t)[m[1]]
	if info == nil || !info.labels[m[2]] {
		t.Errorf("%s: %s has no label %s", where, m[1], m[2])
	}
}

// ---------------------------------------------------------- Prometheus

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestPrometheusRules(t *testing.T) {
	b, err := os.ReadFile("prometheus/guardian-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("prometheus/guardian-rules.yml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: severity label and summary annotation are required", r.Alert)
			}
			checkQuery(t, "alert "+r.Alert, r.Expr, "", scrape{})
		}
	}
	for _, want := range []string{"GuardianRolloutRolledBack", "GuardianGuardTripped", "GuardianXDSNacks", "GuardianDown"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}

	// GuardianDown watches the jobs the scrape configs define.
	for _, f := range []string{"prometheus/prometheus.yml", "prometheus/prometheus-kubernetes.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				JobName       string         `yaml:"job_name"`
				Authorization map[string]any `yaml:"authorization"`
			} `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !slices.Contains(cfg.RuleFiles, "guardian-rules.yml") {
			t.Errorf("%s: rule_files does not load guardian-rules.yml", f)
		}
		for _, sc := range cfg.ScrapeConfigs {
			if !regexp.MustCompile(`^(?:` + jobRegex(rulesExpr(rf, "GuardianDown")) + `)$`).MatchString(sc.JobName) {
				t.Errorf("%s: job %s is not matched by GuardianDown (%s)", f, sc.JobName, rulesExpr(rf, "GuardianDown"))
			}
			if sc.Authorization["credentials_file"] == nil {
				t.Errorf("%s: job %s sends no bearer token; Guardian answers /metrics with 401", f, sc.JobName)
			}
		}
	}

	promtool := requireTool(t, "promtool", true)
	for _, args := range [][]string{
		{"check", "rules", "prometheus/guardian-rules.yml"},
		{"test", "rules", "prometheus/guardian-rules.test.yml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func rulesExpr(rf rulesFile, alert string) string {
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == alert {
				return r.Expr
			}
		}
	}
	return ""
}

func jobRegex(expr string) string {
	if m := regexp.MustCompile(`job=~"([^"]*)"`).FindStringSubmatch(expr); m != nil {
		return m[1]
	}
	if m := regexp.MustCompile(`job="([^"]*)"`).FindStringSubmatch(expr); m != nil {
		return regexp.QuoteMeta(m[1])
	}
	return "$^"
}

func TestPrometheusConfig(t *testing.T) {
	promtool := requireTool(t, "promtool", true)
	// promtool checks that credential files exist: point them at a real one.
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(randomToken(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("prometheus/guardian-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "guardian-rules.yml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	cred := regexp.MustCompile(`(?m)^(\s*credentials_file:\s*)\S+$`)
	for _, name := range []string{"prometheus.yml", "prometheus-kubernetes.yml"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile("prometheus/" + name)
			if err != nil {
				t.Fatal(err)
			}
			if !cred.Match(b) {
				t.Fatalf("%s: no credentials_file", name)
			}
			f := filepath.Join(dir, name)
			if err := os.WriteFile(f, cred.ReplaceAll(b, []byte("${1}"+tokenFile)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(promtool, "check", "config", f).CombinedOutput()
			if err != nil && strings.Contains(string(out), "field kubernetes_sd_configs not found") {
				// Debian builds Prometheus without Kubernetes discovery.
				t.Skipf("this promtool has no Kubernetes service discovery:\n%s", out)
			}
			if err != nil {
				t.Errorf("promtool check config %s: %v\n%s", name, err, out)
			}
		})
	}
}

// ------------------------------------------------------------- systemd

type unitFile map[string]map[string][]string // section -> key -> values

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, i+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unitFile) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// unitWords splits a command line the way systemd does for quoting.
func unitWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote, escaped := false, byte(0), false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			cur.WriteByte(c)
			escaped = false
		case c == '\\':
			escaped = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	u := readUnit(t, "systemd/guardian.service")
	for key, want := range map[string]string{
		"Restart": "on-failure", "KillSignal": "SIGTERM", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
		"StateDirectory": "guardian", "ProtectHome": "yes", "PrivateTmp": "yes",
	} {
		if got := u.last("Service", key); got != want {
			t.Errorf("[Service] %s=%q, want %q", key, got, want)
		}
	}
	if u.last("Service", "DynamicUser") != "yes" && u.last("Service", "User") == "" {
		t.Error("[Service] needs DynamicUser=yes or a dedicated User=")
	}
	if got := u.last("Service", "ExecReload"); !regexp.MustCompile(`^/\S*kill -HUP \$MAINPID$`).MatchString(got) {
		t.Errorf("[Service] ExecReload=%q, want kill -HUP $MAINPID (SIGHUP reloads the specs)", got)
	}
	if u.last("Install", "WantedBy") == "" {
		t.Error("[Install] WantedBy is missing")
	}

	argv := execStartArgs(t, u)
	flags, files := flagValues(t, "ExecStart", argv[1:])
	if !slices.Contains(files, "/etc/guardian/*.yaml") {
		t.Errorf("ExecStart runs %v, want /etc/guardian/*.yaml", files)
	}
	if flags["state-dir"] != "/var/lib/"+u.last("Service", "StateDirectory") {
		t.Errorf("--state-dir %s is not the StateDirectory", flags["state-dir"])
	}
	drain := 30 * time.Second
	if v := flags["drain"]; v != "" {
		var err error
		if drain, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--drain %s: %v", v, err)
		}
	}
	stop := u.last("Service", "TimeoutStopSec")
	if _, err := strconv.Atoi(stop); err == nil {
		stop += "s"
	}
	if d, err := time.ParseDuration(stop); err != nil || d <= drain {
		t.Errorf("TimeoutStopSec=%s must be a duration above --drain %v", u.last("Service", "TimeoutStopSec"), drain)
	}

	// Every variable ExecStart uses has a default in the unit, and the
	// example env file only sets variables the unit or a spec reads.
	defaults := map[string]bool{}
	for _, e := range u["Service"]["Environment"] {
		k, _, _ := strings.Cut(e, "=")
		defaults[k] = true
	}
	for _, m := range regexp.MustCompile(`\$\{?([A-Z_][A-Z0-9_]*)`).FindAllStringSubmatch(u.last("Service", "ExecStart"), -1) {
		if !defaults[m[1]] {
			t.Errorf("ExecStart uses $%s, which has no Environment= default", m[1])
		}
	}
	env, err := os.ReadFile("systemd/guardian.env")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^GUARDIAN_TOKEN=$`).Match(env) {
		t.Error("guardian.env must set GUARDIAN_TOKEN= (empty in the example)")
	}
	for _, m := range regexp.MustCompile(`(?m)^#?([A-Z_][A-Z0-9_]*)=`).FindAllStringSubmatch(string(env), -1) {
		if !defaults[m[1]] && m[1] != "GUARDIAN_TOKEN" && m[1] != "GUARDIAN_WEBHOOK_SECRET" {
			t.Errorf("guardian.env sets %s, which nothing reads", m[1])
		}
	}

	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(sa, "verify", "systemd/guardian.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		// Exposure 2.0 of 10 ("OK"): fails if the hardening is dropped.
		if out, err := exec.Command(sa, "security", "--offline=yes", "--threshold=20", "systemd/guardian.service").CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze security: exposure above 2.0: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze is not installed: verify and security are not checked")
	}
}

// execStartArgs returns guardian's argv from ExecStart, through the shell
// that expands the glob.
func execStartArgs(t *testing.T, u unitFile) []string {
	t.Helper()
	words := unitWords(u.last("Service", "ExecStart"))
	if len(words) == 3 && strings.HasSuffix(words[0], "/sh") && words[1] == "-c" {
		sh := unitWords(words[2])
		if len(sh) < 2 || sh[0] != "exec" {
			t.Fatalf("ExecStart: the shell must exec guardian so $MAINPID is guardian, got %q", words[2])
		}
		words = sh[1:]
	}
	if len(words) < 3 || filepath.Base(words[0]) != "guardian" || words[1] != "run" {
		t.Fatalf("ExecStart runs %v, want guardian run FILE...", words)
	}
	return words[1:]
}

// TestSystemdUnitRuns runs ExecStart as systemd would (the same shell
// command, the unit's Environment=, the token from the env file), with the
// paths moved to a temporary root, then reloads and stops it the way
// ExecReload and KillSignal do: SIGHUP and SIGTERM to the main PID.
func TestSystemdUnitRuns(t *testing.T) {
	bin := guardian(t)
	u := readUnit(t, "systemd/guardian.service")
	words := unitWords(u.last("Service", "ExecStart"))
	if len(words) != 3 || words[1] != "-c" {
		t.Skipf("ExecStart is not a shell command: %v", words)
	}
	root := t.TempDir()
	etc, state := filepath.Join(root, "etc"), filepath.Join(root, "state")
	for _, d := range []string{etc, state} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	for name, text := range configMapSpecs(t, kube(t)) {
		spec, _ := loopbackSpec(t, text, backend.URL, backend.URL)
		if err := os.WriteFile(filepath.Join(etc, name), []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The env file sits next to the specs; the glob must not pick it up.
	if err := os.WriteFile(filepath.Join(etc, "guardian.env"), []byte("not yaml: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("/usr/local/bin/guardian", bin, "/etc/guardian", etc, "/var/lib/guardian", state).Replace(words[2])

	admin := "127.0.0.1:" + freePort(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "GUARDIAN_TOKEN=" + randomToken(t)}
	for _, e := range u["Service"]["Environment"] {
		env = append(env, e)
	}
	// As guardian.env would set them: the shipped spec publishes to xDS.
	env = append(env, "GUARDIAN_ADMIN="+admin, "GUARDIAN_XDS_LISTEN=127.0.0.1:"+freePort(t))

	var out syncBuffer
	cmd := exec.Command(words[0], "-c", script)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var gone atomic.Bool
	go func() { err := cmd.Wait(); gone.Store(true); exited <- err }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	if !waitFor(20*time.Second, func() bool {
		code, _ := httpGet(t, "http://"+admin+"/readyz", "")
		return code == 200 || gone.Load()
	}) || gone.Load() {
		t.Fatalf("guardian under the unit's ExecStart never became ready:\n%s", out.String())
	}
	// $MAINPID is the shell's PID; after exec it is guardian, so SIGHUP
	// reloads instead of killing a shell.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(out.String(), "reloaded") }) {
		t.Fatalf("ExecReload's SIGHUP did not reload guardian:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(state, "guardian.db")); err != nil {
		t.Errorf("no state file in the StateDirectory: %v", err)
	}
	stop, _ := time.ParseDuration(u.last("Service", "TimeoutStopSec"))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("guardian exited with %v after SIGTERM:\n%s", err, out.String())
		}
	case <-time.After(stop):
		t.Errorf("guardian did not stop within TimeoutStopSec=%v", stop)
	}
}

// ---------------------------------------------------------------- docs

// TestReadmesNameEveryFile keeps the READMEs in step with the files.
func TestReadmesNameEveryFile(t *testing.T) {
	for dir, readme := range map[string]string{"kubernetes": "kubernetes/README.md", "systemd": "systemd/README.md"} {
		b, err := os.ReadFile(readme)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "README.md" && !bytes.Contains(b, []byte(e.Name())) {
				t.Errorf("%s does not mention %s", readme, e.Name())
			}
		}
	}
	b, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"deploy/kubernetes", "deploy/systemd"} {
		if !bytes.Contains(b, []byte(p)) {
			t.Errorf("docs/deploy.md does not link %s", p)
		}
	}
	// Directories without a README of their own are described there.
	for _, dir := range []string{"prometheus", "grafana", "container"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !bytes.Contains(b, []byte(e.Name())) {
				t.Errorf("docs/deploy.md does not mention deploy/%s/%s", dir, e.Name())
			}
		}
	}
}

// TestContainerImage keeps the Dockerfile in step with the Deployment: the
// user it runs as, the ports it exposes, the binary it starts. (Building
// the image needs a Docker daemon and the network; this test does not.)
func TestContainerImage(t *testing.T) {
	b, err := os.ReadFile("container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	all := kube(t)
	d, c := deployment(t, all)
	uid := fmt.Sprint(get(d.doc, "spec", "template", "spec", "securityContext", "runAsUser"))
	gid := fmt.Sprint(get(d.doc, "spec", "template", "spec", "securityContext", "runAsGroup"))
	if !regexp.MustCompile(`(?m)^USER ` + uid + `:` + gid + `$`).MatchString(df) {
		t.Errorf("Dockerfile: want USER %s:%s, the Deployment's runAsUser:runAsGroup", uid, gid)
	}
	m := regexp.MustCompile(`(?m)^EXPOSE (.+)$`).FindStringSubmatch(df)
	if m == nil {
		t.Fatal("Dockerfile: no EXPOSE")
	}
	var want []string
	for _, p := range list(c, "ports") {
		want = append(want, fmt.Sprint(get(p, "containerPort")))
	}
	if got := strings.Fields(m[1]); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("Dockerfile EXPOSE %v, Deployment container ports %v", got, want)
	}
	if !strings.Contains(df, `ENTRYPOINT ["/usr/local/bin/guardian"]`) || !strings.Contains(df, "go build") ||
		!strings.Contains(df, "./cmd/guardian") {
		t.Error("Dockerfile must build ./cmd/guardian and run /usr/local/bin/guardian")
	}
	if !strings.Contains(df, "CGO_ENABLED=0") {
		t.Error("Dockerfile: the distroless static base needs a static binary (CGO_ENABLED=0)")
	}
	k := one(t, all, "Kustomization", "")
	image, _, _ := strings.Cut(str(c, "image"), ":")
	if str(k.doc, "images", "0", "name") != image {
		t.Errorf("kustomization images[0].name %q is not the Deployment's image %q", str(k.doc, "images", "0", "name"), image)
	}
}
