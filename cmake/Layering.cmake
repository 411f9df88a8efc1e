# The layering rule (docs/ARCHITECTURE.md, "Layering of the code"): kmodkit_core at the bottom; each binary's
# library depends on the core and third-party libraries only, never on another binary's. Checked
# at configure time, after every target is declared, so a link line that breaks it fails at once.

# What any kmodkit library may link: the core and the compiler settings.
set(KMODKIT_LAYERING_SHARED kmodkit_core kmodkit_standard_settings kmodkit_standard_warnings)

# Appends to `out_var` every target `target` links, directly or through the libraries it links
# (LINK_LIBRARIES and INTERFACE_LINK_LIBRARIES; a private dependency of a static library appears
# in the latter as $<LINK_ONLY:...>).
function(_kmodkit_link_closure target out_var)
  set(seen "")
  set(queue ${target})
  while(queue)
    list(POP_FRONT queue current)
    foreach(property LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
      get_target_property(deps ${current} ${property})
      if(NOT deps)
        continue()
      endif()
      foreach(dep IN LISTS deps)
        string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" dep "${dep}")
        # Other generator expressions and the directory markers (::@...) name no target here.
        if(dep MATCHES "^\\$<|^::@" OR NOT TARGET "${dep}" OR dep IN_LIST seen)
          continue()
        endif()
        list(APPEND seen ${dep})
        list(APPEND queue ${dep})
      endforeach()
    endforeach()
  endwhile()
  set(${out_var} ${seen} PARENT_SCOPE)
endfunction()

# kmodkit_check_layering(<binary> <library>...): the libraries of one binary (or of the core)
# link no kmodkit_* target but the core's and each other. A FATAL_ERROR names the offending link.
function(kmodkit_check_layering binary)
  set(own ${ARGN})
  foreach(library IN LISTS own)
    if(NOT TARGET ${library})
      continue()  # not built in this configuration (the firewall's data plane without DPDK)
    endif()
    _kmodkit_link_closure(${library} deps)
    foreach(dep IN LISTS deps)
      if(dep MATCHES "^kmodkit_" AND NOT dep IN_LIST own AND NOT dep IN_LIST KMODKIT_LAYERING_SHARED)
        message(FATAL_ERROR "layering: ${library} (${binary}) links ${dep}, another binary's library; a binary's library depends only on kmodkit_core and third-party libraries (docs/ARCHITECTURE.md, Layering): move what they share into core/")
      endif()
    endforeach()
  endforeach()
endfunction()
