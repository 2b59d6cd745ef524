package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/metrics"
	"github.com/ternml/tern/pkg/worker"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// deadline bounds every wait; it only matters when the test fails.
const deadline = 90 * time.Second

// tinySteps is the length of the test job: enough for a few step reports.
const tinySteps = 6

// A coordinator and two workers serve /metrics over real HTTP; after a
// two-replica job ran, the scraped figures show it: the job's phase and
// committed step, every step's time counted once on the workers, loss,
// throughput and the gradient bytes on the wire. The default registry
// (Go runtime, embedded etcd) is served alongside.
func TestScrapeAfterTinyJob(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			if err := <-d; err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
	})
	start := func(f func(context.Context) error) {
		d := make(chan error, 1)
		go func() { d <- f(ctx) }()
		done = append(done, d)
	}

	ranks := metrics.NewRanks()
	co, err := coordinator.New(coordinator.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir(),
		Etcd: store.EmbedOptions{UnsafeNoFsync: true}, ServerOptions: []grpc.ServerOption{ranks.ServerOption()}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCoordinator(co, ranks))
	coMetrics, err := metrics.Listen("127.0.0.1:0", prometheus.Gatherers{reg, prometheus.DefaultGatherer}, func() error {
		if !co.Leading() {
			return fmt.Errorf("not leading")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The coordinator's HTTP server starts first: the last to stop.
	start(coMetrics.Serve)
	start(co.Run)

	var workerURLs []string
	for i := range 2 {
		wr := metrics.NewRanks()
		a, err := worker.New(worker.Config{Coordinator: co.Addr(), Name: fmt.Sprintf("w%d", i), Slots: 1, Observe: wr.Observe, DrainTimeout: deadline})
		if err != nil {
			t.Fatal(err)
		}
		wreg := prometheus.NewRegistry()
		wreg.MustRegister(metrics.NewWorker(a, 1, wr))
		srv, err := metrics.Listen("127.0.0.1:0", wreg, nil)
		if err != nil {
			t.Fatal(err)
		}
		start(srv.Serve)
		start(a.Run)
		workerURLs = append(workerURLs, "http://"+srv.Addr())
	}
	coURL := "http://" + coMetrics.Addr()

	waitFor(t, "the coordinator to lead with both workers connected", func() bool {
		m := scrape(t, coURL)
		return value(m, "tern_coordinator_leader", nil) == 1 && value(m, "tern_workers", map[string]string{"state": "connected"}) == 2
	})
	if got := get(t, coURL+"/readyz"); got != "ok\n" {
		t.Errorf("/readyz of the leader: %q", got)
	}
	before := scrape(t, coURL)
	for _, name := range []string{"go_goroutines", "etcd_server_has_leader"} {
		if before[name] == nil {
			t.Errorf("%s missing: the default registry is not served", name)
		}
	}
	if v := value(before, "tern_jobs", map[string]string{"phase": "succeeded"}); v != 0 {
		t.Errorf("succeeded jobs before any ran: %v", v)
	}

	conn, err := grpc.NewClient(co.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ternv1.NewCoordinatorServiceClient(conn)
	doc, err := os.ReadFile("../../examples/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text, err := filepath.Abs("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.ApplyJob(ctx, &ternv1.ApplyJobRequest{Spec: doc, Set: []string{"metadata.name=m", "data.path=" + text,
		"data.cacheDir=" + t.TempDir(), "parallel.data=2", fmt.Sprintf("steps=%d", tinySteps), "eval.everySteps=0"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to succeed", func() bool {
		resp, err := client.GetJob(ctx, &ternv1.GetJobRequest{Name: "m"})
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.Job.Phase; coordinator.Terminal(p) && p != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
			t.Fatalf("job ended %s: %s", p, resp.Job.Reason)
		}
		return resp.Job.Phase == ternv1.JobPhase_JOB_PHASE_SUCCEEDED
	})

	m := scrape(t, coURL)
	job := map[string]string{"job": "m"}
	for name, want := range map[string]float64{
		"tern_job_committed_step": tinySteps,
		"tern_job_steps":          tinySteps,
		"tern_job_ranks":          2,
		"tern_job_attempt":        1,
		"tern_job_restarts_total": 0,
	} {
		if got := value(m, name, job); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if v := value(m, "tern_jobs", map[string]string{"phase": "succeeded"}); v != 1 {
		t.Errorf("succeeded jobs: %v, want 1", v)
	}
	if v := value(m, "tern_job_loss", job); !(v > 0) {
		t.Errorf("tern_job_loss %v, want > 0", v)
	}
	for _, dir := range []string{"sent", "received"} {
		if v := value(m, "tern_job_wire_bytes_total", map[string]string{"job": "m", "direction": dir, "kind": "gradient"}); !(v > 0) {
			t.Errorf("tern_job_wire_bytes_total %s = %v, want > 0 for two replicas", dir, v)
		}
	}
	if n := histCount(m, "tern_job_step_duration_seconds", job); n < 1 || n > tinySteps {
		t.Errorf("coordinator counted %d step times, want 1 to %d", n, tinySteps)
	}
	if v := value(m, "tern_rank_step", map[string]string{"job": "m", "rank": "1"}); v != tinySteps {
		t.Errorf("tern_rank_step of rank 1: %v", v)
	}

	// Each worker ran one rank and counted each of its steps once.
	seen := map[string]bool{}
	for _, u := range workerURLs {
		w := scrape(t, u)
		if v := value(w, "tern_worker_slots", nil); v != 1 {
			t.Errorf("%s: tern_worker_slots %v", u, v)
		}
		for _, mt := range w["tern_rank_step"].GetMetric() {
			rank := label(mt, "rank")
			seen[rank] = true
			lr := map[string]string{"job": "m", "rank": rank}
			if v := mt.GetGauge().GetValue(); v != tinySteps {
				t.Errorf("%s rank %s: step %v, want %d", u, rank, v, tinySteps)
			}
			if n := histCount(w, "tern_rank_step_duration_seconds", lr); n != tinySteps {
				t.Errorf("%s rank %s: %d step times, want %d", u, rank, n, tinySteps)
			}
			for _, name := range []string{"tern_rank_loss", "tern_rank_tokens_per_second", "tern_rank_last_step_seconds"} {
				if v := value(w, name, lr); !(v > 0) {
					t.Errorf("%s rank %s: %s = %v, want > 0", u, rank, name, v)
				}
			}
			for _, dir := range []string{"sent", "received"} {
				if v := value(w, "tern_rank_wire_bytes_total", map[string]string{"job": "m", "rank": rank, "direction": dir, "kind": "gradient"}); !(v > 0) {
					t.Errorf("%s rank %s: %s bytes %v", u, rank, dir, v)
				}
			}
		}
	}
	if !seen["0"] || !seen["1"] {
		t.Errorf("ranks seen on the workers: %v, want 0 and 1", seen)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// scrape GETs base/metrics and parses the text format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %s", base, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", base, err)
	}
	return fams
}

// find returns the series of name whose labels include want.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	for _, m := range fams[name].GetMetric() {
		ok := true
		for k, v := range want {
			ok = ok && label(m, k) == v
		}
		if ok {
			return m
		}
	}
	return nil
}

// value is a gauge's or counter's value; -1 when the series is missing.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	m := find(fams, name, want)
	switch {
	case m == nil:
		return -1
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return -1
}

func histCount(fams map[string]*dto.MetricFamily, name string, want map[string]string) int {
	m := find(fams, name, want)
	if m == nil || m.Histogram == nil {
		return -1
	}
	return int(m.Histogram.GetSampleCount())
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !ok() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
