// Version: sent to the server in `connect` as `client: "pushwire-js/<version>"`.
// A unit test keeps it equal to package.json's version.

export const VERSION = '0.1.0';
