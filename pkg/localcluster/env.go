package localcluster

import (
	"os"
	"strings"

	"github.com/ternml/tern/pkg/auth"
)

// childEnv is the environment of the cluster's processes: this one's
// without the TLS and join-token variables of pkg/auth. Those point
// ternctl at a remote cluster; inherited by a local coordinator and its
// workers, they would turn on a token check or TLS on one side only, and
// the workers would never register.
func childEnv() []string {
	drop := []string{auth.EnvTLSCert, auth.EnvTLSKey, auth.EnvTLSCA, auth.EnvTokenFile}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && k != d
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}
