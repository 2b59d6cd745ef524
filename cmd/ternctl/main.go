//go:build ternctl_main

// The constraint above keeps this file out while deps_tmp.go, which pins the
// module's dependencies, still declares its own empty main; it goes away
// together with deps_tmp.go.

package main

import (
	"context"
	"os"
)

func main() {
	ctx, stop := notifyContext(context.Background(), os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
