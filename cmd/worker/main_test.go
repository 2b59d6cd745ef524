package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// A coordinator beyond loopback needs the CA and the token; the error
// names what is missing.
func TestRemoteCoordinatorNeedsTLSAndToken(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--coordinator", "10.0.0.5:7070"}, "--tls-ca and --token-file are not set (env TERN_TLS_CA, TERN_TOKEN_FILE)"},
		{[]string{"--coordinator", "coord.example:7070", "--token-file", "t"}, "--tls-ca is not set"},
		{[]string{"--coordinator", "127.0.0.1:7070", "--tls-ca", "/nonexistent/ca.crt"}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append(tc.args, "--name", "w"), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
