package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// sourceResolver is resolveSource with its context and coordinator bound;
// the verbs call it once their flags are checked, so a usage error is
// reported as one before anything is looked up.
type sourceResolver func(src string) (string, error)

func resolver(cmd *cobra.Command, cf *clusterFlags) sourceResolver {
	return func(src string) (string, error) { return resolveSource(cmd.Context(), cf, src) }
}

// resolveSource turns the CHECKPOINT|JOB argument of export, generate and
// eval into a path: hf:DIR and anything that exists on disk are taken as
// they are; otherwise the argument is a cluster job's name, and the answer
// is the checkpoint directory of its spec, which must be readable from
// here (a local cluster, or a file system the workers share with this
// machine).
func resolveSource(ctx context.Context, cf *clusterFlags, src string) (string, error) {
	if strings.HasPrefix(src, spec.InitHFPrefix) {
		return src, nil
	}
	if _, err := os.Stat(src); err == nil || !errors.Is(err, os.ErrNotExist) {
		return src, nil
	}
	if strings.ContainsRune(src, filepath.Separator) {
		return "", fmt.Errorf("%s does not exist: pass a checkpoint directory, hf:DIR, or a job's name", src)
	}
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return "", fmt.Errorf("%s is neither a directory here nor a job a coordinator could be asked about: %w", src, err)
	}
	defer closeConn()
	resp, err := client.GetJob(ctx, &ternv1.GetJobRequest{Name: src})
	if status.Code(err) == codes.NotFound {
		return "", fmt.Errorf("%s is neither a directory here nor a job on the coordinator at %s (ternctl get jobs lists them)", src, cf.addr)
	}
	if err != nil {
		return "", rpcErr(cf.addr, "get job "+src, err)
	}
	var job spec.TrainingJob
	if err := json.Unmarshal(resp.GetJob().GetSpecJson(), &job); err != nil {
		return "", fmt.Errorf("job %s: reading its spec from the coordinator: %w", src, err)
	}
	dir := job.Spec.Checkpoint.Dir
	if dir == "" {
		return "", fmt.Errorf("job %s writes no checkpoints (spec.checkpoint.dir is empty), so there are no weights to read; set checkpoint.dir and checkpoint.everySteps in its spec", src)
	}
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("job %s keeps its checkpoints in %s on its workers' file system, which is not readable here (%v); copy the directory over and pass its path", src, dir, err)
	}
	return dir, nil
}
