package testshard

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// childEnv carries a child's token: the word its reports start with.
const childEnv = "MCPCAGE_TESTSHARD_TOKEN"

// tasksFD is the descriptor a child reads its tests' names from, one per
// line; the parent closes it when there are no more.
const tasksFD = 3

// Serve runs m's tests: in a child started by [Run], the tests the
// parent hands it, one m.Run each; otherwise m.Run once. It returns the
// exit code for the process: 0 when every test passed.
func Serve(m *testing.M) int {
	token := os.Getenv(childEnv)
	if token == "" {
		return m.Run()
	}
	// Neither the tests' own processes nor their children are children
	// of the run: they see neither the token nor the tasks.
	_ = os.Unsetenv(childEnv) // a valid name: cannot fail
	syscall.CloseOnExec(tasksFD)
	tasks := bufio.NewReader(os.NewFile(tasksFD, "testshard tasks"))
	flag.Parse() // before -test.run is set: m.Run would parse again and undo it
	code := 0
	for {
		line, err := tasks.ReadString('\n')
		name := strings.TrimSpace(line)
		if name == "" {
			if err != nil {
				return code // no more tests
			}
			continue
		}
		if serr := flag.Set("test.run", "^"+regexp.QuoteMeta(name)+"$"); serr != nil {
			fmt.Fprintf(os.Stderr, "testshard: select %s: %v\n", name, serr)
			return 2
		}
		c := m.Run()
		fmt.Printf("%s %d\n", token, c) // the parent finds it anywhere in a line
		code = max(code, c)
	}
}
