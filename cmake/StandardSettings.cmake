# Compiler settings every kmodkit target links privately (as ccache's standard_settings).
add_library(kmodkit_standard_settings INTERFACE)
target_compile_features(kmodkit_standard_settings INTERFACE cxx_std_23)
set(CMAKE_CXX_EXTENSIONS OFF)

add_library(kmodkit_standard_warnings INTERFACE)
target_compile_options(kmodkit_standard_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
  -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough
  $<$<BOOL:${KMODKIT_WERROR}>:-Werror>)

if(KMODKIT_SANITIZE)
  target_compile_options(kmodkit_standard_settings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(kmodkit_standard_settings INTERFACE -fsanitize=address,undefined)
endif()
if(KMODKIT_FUZZ)
  # The libraries the fuzz targets test: coverage for libFuzzer, and ASan/UBSan, which stop at
  # the first finding. The targets link libFuzzer's main (tests/fuzz).
  target_compile_options(kmodkit_standard_settings INTERFACE
    -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_link_options(kmodkit_standard_settings INTERFACE -fsanitize=address,undefined)
endif()
target_compile_definitions(kmodkit_standard_settings INTERFACE _FILE_OFFSET_BITS=64)
