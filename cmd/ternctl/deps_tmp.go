package main

import (
	_ "github.com/ebitengine/purego"
	_ "github.com/pkoukk/tiktoken-go"
	_ "github.com/pkoukk/tiktoken-go-loader"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/sys/cpu"
	_ "sigs.k8s.io/yaml"
)

func main() {}
