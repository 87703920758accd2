"""The `fleet` command line: cluster commands start servers, model commands talk to one."""
