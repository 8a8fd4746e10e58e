package main

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// proxyPath is where `fluxi2i proxy` mounts wrapper/proxy: fal's server
// proxies' default route, so a page's proxyUrl is "/api/fal/proxy".
const proxyPath = "/api/fal/proxy"

// about says what each command does, under its usage line.
var about = map[string]string{
	"run":    "Submits a job, shows its progress on stderr and saves its images in --out (their paths on stdout).\nWith no key and no --base-url it uses the built-in local simulator, which is NOT the real model.",
	"submit": "Submits a job and prints its request id; it is sent at most once (a lost answer is reported, not sent again).",
	"status": "Prints a job's status (and its logs with --logs).",
	"result": "Fetches a completed job's result and saves its images in --out.",
	"wait":   "Waits for a job started elsewhere, then saves its images in --out; giving up leaves the job running.",
	"cancel": "Asks the queue to cancel a job that has not completed.",
	"batch":  "Runs one job per image of --images DIR (with the input flags), or per line of --manifest FILE.jsonl, resumably: the same command again skips what is done.",
	"proxy": "Serves fal's browser proxy protocol (the JS client's proxyUrl) at " + proxyPath + ", holding the key on the server.\n" +
		"In the page: createFalClient({ proxyUrl: \"" + proxyPath + "\" }) (same origin), or the full URL with --cors ORIGIN.\n" +
		"Only this model's queue operations pass; everything refused is logged with its reason on stderr.\n" +
		"With no key and no --base-url it fronts the built-in local simulator (NOT the real model).",
	"simulate": "Serves the local simulator (NOT the real model) over fal's queue protocol, for any client or language.",
	"version":  "Prints the CLI's version, the library's and Go's.",
}

// helpTopics are the commands help knows, in the order the usage lists them.
var helpTopics = []string{"run", "submit", "status", "result", "wait", "cancel", "batch", "simulate", "proxy", "version"}

// printHelp writes a command's help: usage, what it does, its own flags.
func printHelp(w io.Writer, fs *flag.FlagSet, name, synopsis string) {
	fmt.Fprintf(w, "Usage: fluxi2i %s %s\n", name, synopsis)
	if s := about[name]; s != "" {
		fmt.Fprintf(w, "\n%s\n", s)
	}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) == 0 {
		return
	}
	sort.SliceStable(flags, func(i, j int) bool { return flagOrder(flags[i]) < flagOrder(flags[j]) })
	fmt.Fprintf(w, "\nFlags:\n")
	for _, f := range flags {
		value, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if value != "" {
			line += " " + value
		}
		if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && !strings.Contains(usage, "default") {
			usage += " (default " + d + ")"
		}
		fmt.Fprintf(w, "%s\n        %s\n", line, strings.ReplaceAll(usage, "\n", "\n        "))
	}
}

// flagOrder lists the required flags first, then the command's own, then
// the shared configuration flags.
func flagOrder(f *flag.Flag) int {
	switch {
	case strings.Contains(f.Usage, "(required)"):
		return 0
	case sharedFlag[f.Name]:
		return 2
	}
	return 1
}

var sharedFlag = map[string]bool{"base-url": true, "api-key": true, "timeout": true, "json": true}

// closest is the candidate a mistyped word most likely meant: within two
// edits, or one the word is a prefix of; "" when none is close.
func closest(typed string, candidates []string) string {
	typed = strings.ToLower(typed)
	best, bestD := "", 3
	for _, c := range candidates {
		d := editDistance(typed, c)
		if strings.HasPrefix(c, typed) && len(typed) >= 2 {
			d = min(d, 1)
		}
		if d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// helpCommand serves `fluxi2i help [TOPIC]`: the usage, or the topic's
// help, on stdout; an unknown topic is a usage error with a suggestion.
func (a *app) helpCommand(rest []string) int {
	if len(rest) == 0 || rest[0] == "help" {
		fmt.Fprint(a.stdout, usage)
		return exitOK
	}
	topic := rest[0]
	if topic == "version" {
		printHelp(a.stdout, flag.NewFlagSet("version", flag.ContinueOnError), "version", "")
		return exitOK
	}
	if !commands[topic] {
		if s := closest(topic, helpTopics); s != "" {
			fmt.Fprintf(a.stderr, "fluxi2i help: no command %s; did you mean %s?\n", printable(topic), s)
		} else {
			fmt.Fprintf(a.stderr, "fluxi2i help: no command %s; did you mean one of %s?\n", printable(topic), strings.Join(helpTopics, ", "))
		}
		return exitUsage
	}
	return -1 // the caller runs topic --help
}

// flagError reports a flag parse error in one or two lines: an unknown
// flag with the flag it most likely meant, and where the flags are listed.
func (a *app) flagError(fs *flag.FlagSet, err error) {
	name := strings.TrimPrefix(fs.Name(), "fluxi2i ")
	msg := err.Error()
	if typed, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		typed = strings.TrimLeft(typed, "-")
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if s := closest(typed, names); s != "" {
			fmt.Fprintf(a.stderr, "fluxi2i %s: unknown flag --%s; did you mean --%s?\n", name, printable(typed), s)
		} else {
			fmt.Fprintf(a.stderr, "fluxi2i %s: unknown flag --%s\n", name, printable(typed))
		}
	} else {
		msg = strings.ReplaceAll(strings.ReplaceAll(msg, "flag -", "flag --"), ": -", ": --")
		fmt.Fprintf(a.stderr, "fluxi2i %s: %s\n", name, printable(msg))
	}
	fmt.Fprintf(a.stderr, "Run 'fluxi2i help %s' for its flags.\n", name)
}
