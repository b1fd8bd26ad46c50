# The Debian package (CPack DEB), built by scripts/build-deb:
#   cmake -S . -B B -DCMAKE_INSTALL_PREFIX=/usr -DCARTGATE_DEB=ON -DCARTGATE_SOURCE_TREE_FALLBACK=OFF
#   cmake --build B --target cartgate deb-files && (cd B && cpack -G DEB)
# Adds what only the package installs: the systemd unit, the Debian changelog and copyright,
# README.Debian and the lintian overrides (each one explained in packaging/lintian-overrides).
set(DEB_DIR ${CMAKE_CURRENT_LIST_DIR})
set(DEB_OUT ${CMAKE_BINARY_DIR}/deb)
find_program(GZIP_EXE gzip REQUIRED)
set(DEB_GZ)
foreach(pair "${DEB_DIR}/changelog=changelog.Debian.gz" "${CMAKE_SOURCE_DIR}/docs/man/cartgate.8=cartgate.8.gz"
             "${CMAKE_SOURCE_DIR}/docs/man/cartgate.conf.5=cartgate.conf.5.gz")
  string(REPLACE "=" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  add_custom_command(OUTPUT ${DEB_OUT}/${to}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${DEB_OUT}
    COMMAND ${GZIP_EXE} -9nc ${from} > ${DEB_OUT}/${to}
    DEPENDS ${from} VERBATIM)
  list(APPEND DEB_GZ ${DEB_OUT}/${to})
endforeach()
add_custom_target(deb-files ALL DEPENDS ${DEB_GZ})
install(FILES ${DEB_OUT}/cartgate.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${DEB_OUT}/cartgate.conf.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)

# The unit goes where the building release's own packages put theirs: /lib/systemd/system up to
# Debian 12, /usr/lib/systemd/system from Debian 13 on (/usr-merge completed).
set(DEB_UNIT_DIR /lib/systemd/system)
if(EXISTS /etc/os-release)
  file(STRINGS /etc/os-release os_version REGEX "^VERSION_ID=")
  if(os_version MATCHES "VERSION_ID=\"?([0-9]+)" AND CMAKE_MATCH_1 GREATER_EQUAL 13)
    set(DEB_UNIT_DIR /usr/lib/systemd/system)
  endif()
endif()
install(FILES ${DEB_DIR}/cartgate.service DESTINATION ${DEB_UNIT_DIR})
install(FILES ${DEB_DIR}/copyright ${DEB_DIR}/README.Debian ${DEB_OUT}/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${DEB_DIR}/lintian-overrides DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides
        RENAME cartgate)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cartgate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGE_CONTACT "cartgate maintainers <cartgate@example.org>")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "CAR T eligibility screening and referral gateway")
# CPack puts the summary first and indents these lines itself (an empty line = paragraph).
set(CPACK_PACKAGE_DESCRIPTION "cartgate runs beside a hospital's EHR: it reads FHIR R4 data,
builds a clinical profile of lymphoma, leukemia and myeloma patients, screens
it against the FDA labels of the approved CAR T-cell products and delivers
referrals (ServiceRequest and Task) to accredited treatment centers exactly
once, then follows them.

This package holds the daemon and command-line tool, its criteria and mapping
data, a sandboxed systemd unit and the cartgate system user.")
# Depends: the shared libraries (dpkg-shlibdeps) and what the maintainer scripts run.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The referral packet's PDF renderer is loaded with dlopen when a PDF is first drawn
# (gateway/referral/packet.c, PDF_LIBS: keep these sonames in step), and libxml2 at the first XML
# parse (fhir/fhir_xml.c, XML_SONAME), so dpkg-shlibdeps does not see them: each library's package, as the building release names it (dpkg-query -S of the file
# the soname resolves to: libcairo2, libglib2.0-0 (gobject), libpango-1.0-0, libpangocairo-1.0-0
# on Debian 12; Debian 13 renamed some, e.g. libglib2.0-0t64), with the version its shlibs file
# asks for, as dpkg-shlibdeps would write it.
set(DEB_PDF_DEPENDS "")
foreach(soname libcairo.so.2 libgobject-2.0.so.0 libpango-1.0.so.0 libpangocairo-1.0.so.0
                libxml2.so.2)
  find_library(DEB_PDF_LIB NAMES ${soname} NO_CACHE REQUIRED)
  execute_process(COMMAND dpkg-query -S ${DEB_PDF_LIB} OUTPUT_VARIABLE owner RESULT_VARIABLE rc
                  ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR NOT owner MATCHES "^([^ ,]+): /")
    message(FATAL_ERROR "packaging: no Debian package holds ${DEB_PDF_LIB} (${soname}, loaded with dlopen)")
  endif()
  set(pkg ${CMAKE_MATCH_1})               # libcairo2:amd64
  string(REGEX REPLACE ":.*" "" dep ${pkg}) # libcairo2
  execute_process(COMMAND dpkg-query --control-show ${pkg} shlibs OUTPUT_VARIABLE shlibs
                  RESULT_VARIABLE rc ERROR_QUIET)
  string(REGEX MATCH "^(.*)\\.so\\.([0-9.]+)$" _ ${soname})
  string(REPLACE "." "\\." name_re "${CMAKE_MATCH_1} ${CMAKE_MATCH_2}")
  if(rc EQUAL 0 AND shlibs MATCHES "(^|\n)${name_re} ([^\n]+)")
    set(dep "${CMAKE_MATCH_2}")          # libcairo2 (>= 1.16.0)
  endif()
  list(APPEND DEB_PDF_DEPENDS "${dep}")
  unset(DEB_PDF_LIB)
endforeach()
list(REMOVE_DUPLICATES DEB_PDF_DEPENDS)
list(JOIN DEB_PDF_DEPENDS ", " DEB_PDF_DEPENDS)
message(STATUS "packaging: the Depends of what is loaded with dlopen: ${DEB_PDF_DEPENDS}")
# adduser: the maintainer scripts; fonts-dejavu-core: the referral packet PDF needs a font
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, fonts-dejavu-core, ${DEB_PDF_DEPENDS}")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${DEB_DIR}/postinst ${DEB_DIR}/prerm ${DEB_DIR}/postrm ${DEB_DIR}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_STRIP_FILES ON)
include(CPack)
