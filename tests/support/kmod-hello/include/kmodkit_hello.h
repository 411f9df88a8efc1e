/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KMODKIT_HELLO_H
#define KMODKIT_HELLO_H
#ifndef KMODKIT_HELLO_GREETING
#error "KMODKIT_HELLO_GREETING must come from the recipe's make variables"
#endif
#endif
