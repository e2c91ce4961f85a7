package testshard

import (
	"fmt"
	"strings"
)

// testFlag is one of package testing's flags, by its name after "test.".
type testFlag string

// The flags Run reads or that keep a run in one child.
const (
	flagRun      testFlag = "run"
	flagVerbose  testFlag = "v"
	flagFailFast testFlag = "failfast"
)

// valueFlags are testing's flags that take a value; a value may be the
// next argument. The others are booleans.
var valueFlags = map[testFlag]bool{
	"run": true, "skip": true, "list": true, "bench": true, "benchtime": true, "count": true,
	"timeout": true, "cpu": true, "parallel": true, "shuffle": true, "fuzz": true, "fuzztime": true,
	"fuzzminimizetime": true, "fuzzcachedir": true, "coverprofile": true, "cpuprofile": true,
	"memprofile": true, "memprofilerate": true, "blockprofile": true, "blockprofilerate": true,
	"mutexprofile": true, "mutexprofilefraction": true, "outputdir": true, "trace": true,
	"testlogfile": true, "gocoverdir": true, "v": false, "artifacts": false,
}

// oneChildFlags are the flags with which a run stays in one child: what
// they ask for is not a set of whole top-level tests, or is written once
// per process.
var oneChildFlags = []testFlag{
	"skip", "list", "bench", "fuzz", "coverprofile", "cpuprofile", "memprofile",
	"blockprofile", "mutexprofile", "trace", "gocoverdir", "testlogfile",
}

// parsedArgs is what Run needs from a test binary's arguments.
type parsedArgs struct {
	flags map[testFlag]string // the last value of each test flag given
	other []string            // arguments that are not test flags
}

// parseArgs reads a test binary's arguments as package testing would:
// -test.name=value, -test.name value (for flags that take one), or
// -test.name (a boolean); one or two dashes.
func parseArgs(args []string) (parsedArgs, error) {
	p := parsedArgs{flags: map[testFlag]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, ok := strings.CutPrefix(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "test.")
		if !ok || !strings.HasPrefix(a, "-") {
			p.other = append(p.other, a)
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		f := testFlag(name)
		switch {
		case hasValue:
		case valueFlags[f]:
			if i+1 >= len(args) {
				return p, fmt.Errorf("flag -test.%s needs a value", name)
			}
			i++
			value = args[i]
		default:
			value = "true"
		}
		p.flags[f] = value
	}
	return p, nil
}

// oneChild says why a run with these arguments stays in one child, or
// "" when it can be sharded.
func (p parsedArgs) oneChild() string {
	if len(p.other) > 0 {
		return fmt.Sprintf("arguments that are not test flags (%s)", strings.Join(p.other, " "))
	}
	for _, f := range oneChildFlags {
		if v, ok := p.flags[f]; ok && v != "" {
			return "-test." + string(f)
		}
	}
	if v, ok := p.flags["shuffle"]; ok && v != "off" {
		return "-test.shuffle"
	}
	if strings.Contains(p.flags[flagRun], "/") {
		return "-test.run selects subtests"
	}
	return ""
}

// json: the tests print for test2json (-test.v=test2json), whose lines
// of the framework start with a marker byte.
func (p parsedArgs) json() bool { return p.flags[flagVerbose] == "test2json" }

// failFast: no test is to start after one failed.
func (p parsedArgs) failFast() bool {
	v := p.flags[flagFailFast]
	return v == "true" || v == "1" || v == "t" || v == "T" || v == "TRUE" || v == "True"
}
