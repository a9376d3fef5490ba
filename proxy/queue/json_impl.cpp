// The compiled part of Boost.JSON (header-only mode), built once here for the spool records.
#include <boost/json/src.hpp>
