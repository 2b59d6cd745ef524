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
