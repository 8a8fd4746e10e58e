package wrapper

import (
	"context"

	"github.com/fluxi2i/fluxi2i/gen"
)

// Run submits in and waits for its result: Submit, then Wait. Use WithOnQueued
// to learn the request id as soon as the job is queued (to store it, so a
// crashed caller can resume with Wait). Errors after the job was queued are
// *JobError values naming the request id.
func (c *Client) Run(ctx context.Context, in gen.Input, opts ...Option) (*Result, error) {
	s, err := c.call(forRun, "Run", opts)
	if err != nil {
		return nil, err
	}
	ctx, end := c.startJob(ctx, JobStart{Call: "run", Input: &in})
	l := &lane{shared: true} // the job's calls, one after another
	defer l.end()
	q, err := c.submit(ctx, in, s, l)
	if err != nil {
		end("", nil, err)
		return nil, err
	}
	if s.onQueued != nil {
		s.onQueued(q)
	}
	res, err := c.wait(ctx, s, q.RequestID, l)
	end(q.RequestID, res, err)
	return res, err
}
