package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// startCoordinator runs a coordinator in this process (embedded etcd, real
// gRPC on loopback) until the test ends, and returns a client.
func startCoordinator(t *testing.T) ternv1.CoordinatorServiceClient {
	t.Helper()
	co, err := coordinator.New(coordinator.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Etcd: store.EmbedOptions{UnsafeNoFsync: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	cl := dial(t, co.Addr())
	waitFor(t, "the coordinator to lead", func(ctx context.Context) (bool, error) {
		_, err := cl.ListJobs(ctx, &ternv1.ListJobsRequest{})
		return err == nil, nil
	})
	return cl
}

// Hostile and mistaken job specs sent to ApplyJob, as `ternctl apply` or
// any other client would: each is refused with INVALID_ARGUMENT (or, over
// gRPC's message limit, RESOURCE_EXHAUSTED) and a message that names the
// problem, nothing is created, and the coordinator goes on serving.
func TestApplyRefusesBadInput(t *testing.T) {
	cl := startCoordinator(t)
	const head = "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: bad}\nspec:\n  model: {preset: tiny}\n  data: {path: /abs/corpus}\n"
	bomb := "a: &a [x,x,x,x,x,x,x,x,x]\n"
	prev := "a"
	for c := 'b'; c <= 'j'; c++ {
		bomb += fmt.Sprintf("%c: &%c [%s]\n", c, c, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
		prev = string(c)
	}
	cases := []struct {
		name   string
		doc    string
		sets   []string
		code   codes.Code
		want   []string // substrings of the message
		fields []string // field paths in the BadRequest detail, if any
	}{
		{"malformed YAML", head + "  steps: [1,\n", nil, codes.InvalidArgument, []string{"parse YAML"}, nil},
		{"unknown field", head + "  stepz: 10\n", nil, codes.InvalidArgument, []string{`unknown field "stepz"`, `did you mean "steps"?`}, []string{"spec.stepz"}},
		{"impossible layout", head + "  parallel: {pipeline: 5}\n", nil, codes.InvalidArgument, []string{"5 stages for 2 layers"}, []string{"spec.parallel.pipeline"}},
		{"unknown optimizer", head + "  optimizer: {name: lion}\n", nil, codes.InvalidArgument, []string{`"lion" is not supported`}, []string{"spec.optimizer.name"}},
		{"negative steps", head, []string{"steps=-3"}, codes.InvalidArgument, []string{"must be >= 1, got -3 (from --set steps=-3)"}, []string{"spec.steps"}},
		{"missing data path", strings.Replace(head, "data: {path: /abs/corpus}", "data: {kind: tokens}", 1), nil, codes.InvalidArgument, []string{"required for kind tokens"}, []string{"spec.data.path"}},
		{"relative data path", strings.Replace(head, "/abs/corpus", "corpus.txt", 1), nil, codes.InvalidArgument, []string{"relative path, which workers cannot resolve"}, []string{"spec.data.path"}},
		{"non-finite number", head + "  optimizer: {lr: .inf}\n", nil, codes.InvalidArgument, []string{"got +Inf: numbers in a job spec must be finite"}, []string{"spec.optimizer.lr"}},
		{"alias bomb", bomb, nil, codes.InvalidArgument, []string{"excessive aliasing"}, nil},
		{"deep nesting", strings.Repeat("[", 50_000), nil, codes.InvalidArgument, []string{"max depth"}, nil},
		{"over the spec limit", head + "# " + strings.Repeat("x", 1<<20) + "\n", nil, codes.InvalidArgument, []string{"at most 1048576 are accepted"}, nil},
		{"over the message limit", head + "# " + strings.Repeat("x", 5<<20) + "\n", nil, codes.ResourceExhausted, []string{"larger than max"}, nil},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := cl.ApplyJob(ctx, &ternv1.ApplyJobRequest{Spec: []byte(c.doc), Set: c.sets})
			st := status.Convert(err)
			if st.Code() != c.code {
				t.Fatalf("code %v, want %v: %.500s", st.Code(), c.code, st.Message())
			}
			for _, w := range c.want {
				if !strings.Contains(st.Message(), w) {
					t.Errorf("message does not contain %q:\n%.1000s", w, st.Message())
				}
			}
			var got []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, f := range br.FieldViolations {
						got = append(got, f.Field)
					}
				}
			}
			if c.fields != nil && strings.Join(got, ",") != strings.Join(c.fields, ",") {
				t.Errorf("field violations %v, want %v", got, c.fields)
			}
		})
	}
	resp, err := cl.ListJobs(ctx, &ternv1.ListJobsRequest{})
	if err != nil {
		t.Fatalf("the coordinator stopped answering: %v", err)
	}
	if len(resp.Jobs) != 0 {
		t.Fatalf("refused specs created %d jobs", len(resp.Jobs))
	}
}
