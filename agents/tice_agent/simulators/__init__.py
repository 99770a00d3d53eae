"""Protocol-level simulators of the peripherals the agent reads: a Huawei HiLink 3G key (HTTP),
a PJLink projector (TCP) and a USB backup disk (sysfs, udev and a smartctl stand-in). Tests run
the real agent against them over loopback, and the demo fleet serves them. They are test and demo
code: the agent never imports this package (the HiLink simulator needs aiohttp, which the agent
does not install)."""
