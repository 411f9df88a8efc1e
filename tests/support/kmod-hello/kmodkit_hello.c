// SPDX-License-Identifier: GPL-2.0
// The project's test module: built by kmod-builder's tests from its own recipe
// (kmodkit-recipe.json) to prove that make variables, include directories and probes reach
// the compiler. It does nothing but log a line when loaded.
#include <linux/init.h>
#include <linux/module.h>

#include "kmodkit_hello.h"

static int __init kmodkit_hello_init(void)
{
	pr_info("kmodkit hello: %s\n", KMODKIT_HELLO_GREETING);
	return 0;
}

static void __exit kmodkit_hello_exit(void)
{
}

module_init(kmodkit_hello_init);
module_exit(kmodkit_hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodkit test module");
MODULE_VERSION("1.0");
MODULE_INFO(kmodkit_greeting, KMODKIT_HELLO_GREETING);
#ifdef HAVE_ARG_TX_QUEUE
MODULE_INFO(kmodkit_probe, "ndo_tx_timeout has txqueue");
#else
MODULE_INFO(kmodkit_probe, "ndo_tx_timeout without txqueue");
#endif
