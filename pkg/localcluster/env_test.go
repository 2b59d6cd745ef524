package localcluster

import (
	"slices"
	"strings"
	"testing"
)

// A shell set up for a remote cluster does not leak its TLS and token
// settings into a local cluster's processes; everything else passes.
func TestChildEnvDropsRemoteCredentials(t *testing.T) {
	for _, k := range []string{"TERN_TLS_CERT", "TERN_TLS_KEY", "TERN_TLS_CA", "TERN_TOKEN_FILE"} {
		t.Setenv(k, "/somewhere/"+k)
	}
	t.Setenv("TERN_HOME", "/home/x/.tern")
	env := childEnv()
	for _, kv := range env {
		if strings.HasPrefix(kv, "TERN_TLS_") || strings.HasPrefix(kv, "TERN_TOKEN_FILE=") {
			t.Errorf("%s passed to a local cluster's process", kv)
		}
	}
	if !slices.Contains(env, "TERN_HOME=/home/x/.tern") {
		t.Error("TERN_HOME was dropped")
	}
}
